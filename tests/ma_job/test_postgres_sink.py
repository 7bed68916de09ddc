"""The `tickpipe-postgres` table sink (services/ma-job/udf) on a real PostgreSQL: every type it
writes arrives as it was, a key changed many times in quick succession ends with its last value (batches with the
same key twice are written once per key), and a retraction deletes the row."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from tests.helpers import local_flink
from tickpipe.config import Settings
from tickpipe.ma_job.tables import table_ddl

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

pytestmark = pytest.mark.integration

KEYS = 10
UPDATES = 20_000


@pytest.fixture(scope="module")
def env() -> StreamExecutionEnvironment:
    """An in-process Flink with the connectors and our jar, one subtask: rows keep their order."""
    return local_flink(**{"pipeline.object-reuse": "true"})  # as in the job: the sink must copy the rows it keeps


@pytest.fixture(scope="module")
def t_env(env: StreamExecutionEnvironment) -> StreamTableEnvironment:
    from pyflink.table import StreamTableEnvironment

    return StreamTableEnvironment.create(env)


def sink_options(settings: Settings, table: str) -> dict[str, str]:
    options = {
        "connector": "tickpipe-postgres",
        "url": settings.database.jdbc_url(),
        "table-name": table,
        "username": settings.database.user,
    }
    if settings.database_password:
        options["password"] = settings.database_password.get_secret_value()
    return options


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def execute(settings: Settings, sql: str) -> None:
    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        conn.execute(sql)


def test_every_type_is_written_as_it_was(t_env: StreamTableEnvironment, fresh_database: Settings) -> None:
    execute(
        fresh_database,
        "CREATE TABLE typed (id bigint PRIMARY KEY, flag boolean, small smallint, num integer, single real, "
        "dbl double precision, name text, day date, at timestamptz, wall timestamp(3))",
    )
    columns = """
  `id` BIGINT, `flag` BOOLEAN, `small` SMALLINT, `num` INT, `single` FLOAT, `dbl` DOUBLE, `name` STRING,
  `day` DATE, `at` TIMESTAMP(3), `wall` TIMESTAMP(3),
  PRIMARY KEY (`id`) NOT ENFORCED"""
    t_env.execute_sql(table_ddl("typed_sink", columns, sink_options(fresh_database, "typed")))
    t_env.execute_sql(
        "INSERT INTO typed_sink VALUES "
        "(1, TRUE, CAST(-3 AS SMALLINT), -2147483648, CAST(1.5 AS FLOAT), 3.0000000000000004E-1, "
        "'BTC \"quoted\" \\ tab\tnewline\nünïcødé 🚀', DATE '1999-12-31', TIMESTAMP '2026-12-02 01:02:03.456', "
        "TIMESTAMP '1970-01-01 00:00:00.001'), "
        "(2, FALSE, CAST(32767 AS SMALLINT), 7, CAST(-0.0 AS FLOAT), 1.7976931348623157E308, '', "
        "DATE '2000-01-01', TIMESTAMP '1999-12-31 23:59:59.999', TIMESTAMP '2000-01-01 00:00:00.000'), "
        "(3, CAST(NULL AS BOOLEAN), CAST(NULL AS SMALLINT), CAST(NULL AS INT), CAST(NULL AS FLOAT), "
        "CAST('NaN' AS DOUBLE), CAST(NULL AS STRING), CAST(NULL AS DATE), CAST(NULL AS TIMESTAMP(3)), "
        "CAST(NULL AS TIMESTAMP(3)))"
    ).wait()

    rows = query(fresh_database, "SELECT * FROM typed ORDER BY id")
    assert rows[:2] == [
        (
            1,
            True,
            -3,
            -2147483648,
            1.5,
            0.30000000000000004,
            'BTC "quoted" \\ tab\tnewline\nünïcødé 🚀',
            date(1999, 12, 31),
            datetime(2026, 12, 2, 1, 2, 3, 456000, tzinfo=UTC),  # the job's JVM zone: UTC
            datetime(1970, 1, 1, 0, 0, 0, 1000),
        ),
        (
            2,
            False,
            32767,
            7,
            -0.0,
            1.7976931348623157e308,
            "",
            date(2000, 1, 1),
            datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
            datetime(2000, 1, 1),
        ),
    ]
    third = rows[2]
    assert third[0] == 3 and math.isnan(third[5])
    assert [v for i, v in enumerate(third) if i not in (0, 5)] == [None] * 8


def test_a_key_changed_many_times_ends_with_its_last_value(
    t_env: StreamTableEnvironment, fresh_database: Settings
) -> None:
    # Rows arrive faster than transactions commit, so batches hold the same key many times: written once per key
    # (PostgreSQL refuses an upsert that hits a row twice), the last change winning.
    execute(fresh_database, "CREATE TABLE latest (k integer PRIMARY KEY, v bigint NOT NULL)")
    t_env.execute_sql(
        f"CREATE TABLE numbers (n BIGINT) WITH ('connector' = 'datagen', 'fields.n.kind' = 'sequence', "
        f"'fields.n.start' = '1', 'fields.n.end' = '{UPDATES}', 'rows-per-second' = '1000000')"
    )
    columns = "\n  `k` INT, `v` BIGINT, PRIMARY KEY (`k`) NOT ENFORCED"
    t_env.execute_sql(table_ddl("latest", columns, sink_options(fresh_database, "latest")))
    insert = f"INSERT INTO latest SELECT CAST(MOD(n, {KEYS}) AS INT), n FROM numbers"  # noqa: S608
    t_env.execute_sql(insert).wait()

    assert query(fresh_database, "SELECT k, v FROM latest ORDER BY k") == [
        (k, UPDATES - (UPDATES - k) % KEYS) for k in range(KEYS)
    ]


def test_a_deleted_row_is_deleted(
    env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, fresh_database: Settings
) -> None:
    # A changelog with DELETEs, as the candle job's signals sink gets when a recomputation retracts a signal.
    from pyflink.common import Row, RowKind, Types

    execute(fresh_database, "CREATE TABLE kept (k integer PRIMARY KEY, v bigint NOT NULL)")
    changes = [(RowKind.INSERT, 1, 10), (RowKind.INSERT, 2, 20), (RowKind.DELETE, 1, 10), (RowKind.INSERT, 3, 30)]
    changes += [(RowKind.UPDATE_AFTER, 2, 21), (RowKind.DELETE, 3, 30), (RowKind.INSERT, 3, 31)]
    rows = []
    for kind, k, v in changes:
        row = Row(k, v)
        row.set_row_kind(kind)
        rows.append(row)
    stream = env.from_collection(rows, type_info=Types.ROW_NAMED(["k", "v"], [Types.INT(), Types.LONG()]))
    columns = "\n  `k` INT NOT NULL, `v` BIGINT, PRIMARY KEY (`k`) NOT ENFORCED"
    t_env.execute_sql(table_ddl("kept", columns, sink_options(fresh_database, "kept")))
    t_env.from_changelog_stream(stream).execute_insert("kept").wait()

    assert query(fresh_database, "SELECT k, v FROM kept ORDER BY k") == [(2, 21), (3, 31)]


def test_a_table_without_a_primary_key_is_refused_in_one_line(
    t_env: StreamTableEnvironment, fresh_database: Settings
) -> None:
    from py4j.protocol import Py4JJavaError

    t_env.execute_sql(table_ddl("keyless", "\n  `k` INT", sink_options(fresh_database, "keyless")))
    with pytest.raises(Py4JJavaError) as raised:
        t_env.execute_sql("INSERT INTO keyless VALUES (1)")
    assert "needs a PRIMARY KEY (...) NOT ENFORCED" in str(raised.value)
