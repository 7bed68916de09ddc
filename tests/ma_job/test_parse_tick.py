"""The sql engine's JVM parser (PARSE_TICK) against the Python one (tickpipe.schema.parse_tick): same verdicts.

Both run over the same payloads: valid ticks in every form the wire allows, and every kind of bad record. A tick
must come out with the same symbol, event time, price and volume; a rejected record with the same reason (up to
how the offending value is quoted after the colon).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest

from tickpipe.ma_job.job import connector_jars
from tickpipe.ma_job.sql_engine import FUNCTIONS
from tickpipe.schema import InvalidTick, Tick, parse_tick

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VALID = '"symbol":"btcusdt","timestamp":"2026-11-24T12:00:00.123Z","price":97000.5,"volume":1.5,"source":"binance"'


def edge_cases() -> list[str]:
    def tick(**fields: object) -> str:
        record: dict[str, object] = json.loads("{" + VALID + "}")
        record.update(fields)
        return json.dumps({key: value for key, value in record.items() if value is not ...})

    return [
        "{" + VALID + "}",
        " {" + VALID + "}\n",
        tick(price="97000.50", volume="0"),  # Binance sends numbers as strings
        tick(price=" 1e-8 ", volume=1e6),
        tick(price=10**6, volume=0),
        tick(timestamp="2026-11-24T12:00:00Z"),
        tick(timestamp="2026-11-24T13:00:00.5+01:00"),
        tick(timestamp="2026-11-24T12:00:00.123456Z"),
        tick(extra={"nested": [1, 2]}, symbol="ethbtc"),
        '{"symbol":"A","symbol":"BTCUSDT","timestamp":"2026-11-24T12:00:00.000Z","price":1,"volume":1,"source":"x"}',
        # Rejected
        "",
        "this is not json",
        "{" + VALID,
        "{" + VALID + "} trailing",
        "{" + VALID + "} {}",
        "[1, 2]",
        '"a string"',
        "null",
        "{}",
        '{"symbol":"BTCUSDT"}',
        tick(source=...),
        tick(symbol="BTC-USDT"),
        tick(symbol=""),
        # The symbol rule (tickpipe.schema.is_symbol): 2 to 20 ASCII letters and digits, nothing else.
        tick(symbol="A"),
        tick(symbol="X" * 21),
        tick(symbol="BTCÜSDT"),
        tick(symbol="١٢٣٤"),
        tick(symbol="\uff22\uff34\uff23"),
        tick(symbol="X" * 20),
        tick(symbol=42),
        tick(symbol=None),
        tick(timestamp="yesterday"),
        tick(timestamp="2026-11-24T12:00:00.000"),
        tick(timestamp="2026-13-24T12:00:00.000Z"),
        tick(timestamp=1_795_000_000_000),
        tick(timestamp="1969-12-31T23:59:59.000Z"),
        tick(price=-1),
        tick(price=0),
        tick(price="0.0"),
        tick(price="abc"),
        tick(price="1.5f"),
        tick(price="0x10"),
        tick(price=True),
        tick(price=None),
        tick(price=[1]),
        tick(price="inf"),
        tick(price="NaN"),
        '{"symbol":"BTCUSDT","timestamp":"2026-11-24T12:00:00.000Z","price":NaN,"volume":1,"source":"x"}',
        '{"symbol":"BTCUSDT","timestamp":"2026-11-24T12:00:00.000Z","price":1e400,"volume":1,"source":"x"}',
        tick(volume=-0.5),
        tick(volume="-1"),
        tick(volume=False),
        # Per source (tickpipe.schema.SYMBOL_RULES): each source's symbols, stored in its case; an unknown source.
        tick(source="coingecko", symbol="bitcoin/usd"),
        tick(source="coingecko", symbol="Wrapped-Bitcoin/EUR"),
        tick(source="coingecko", symbol="1inch/sats"),
        tick(source="yahoo", symbol="aapl"),
        tick(source="yahoo", symbol="^GSPC"),
        tick(source="yahoo", symbol="EURUSD=X"),
        tick(source="yahoo", symbol="0700.hk"),
        tick(source="yahoo", symbol="brk-b"),
        tick(source="yahoo", symbol="F"),
        tick(source="yahoo", symbol="Y" * 20),
        tick(source="coingecko", symbol="BTCUSDT"),
        tick(source="coingecko", symbol="bitcoin/"),
        tick(source="coingecko", symbol="-bitcoin/usd"),
        tick(source="coingecko", symbol="bitcoin/usd/eur"),
        tick(source="coingecko", symbol="bitcöin/usd"),
        tick(source="coingecko", symbol="a" * 101 + "/usd"),
        tick(source="yahoo", symbol="Y" * 21),
        tick(source="yahoo", symbol="BTC--USD"),
        tick(source="yahoo", symbol="^^GSPC"),
        tick(source="yahoo", symbol="bitcoin/usd"),
        tick(source="yahoo", symbol="\uff21APL"),
        tick(source="yahoo", symbol=""),
        tick(source="yahoo", symbol=None),
        tick(source="binance", symbol="^GSPC"),
        tick(source="kraken"),
        tick(source="Binance"),
        tick(source=None),
        tick(source=42),
        tick(source={"a": 1}),
        tick(source="kraken", symbol="???"),  # an unknown source's symbol has no rule: the source is the reason
        tick(source="kraken", price=-1),  # ...and the other checks come first, as in both parsers
    ]


def random_ticks(count: int) -> list[str]:
    rng = random.Random(3)
    payloads = []
    symbols = {"binance": "SYM{}USDT", "coingecko": "coin-{}/usd", "yahoo": "^S{}.HK"}
    for _ in range(count):
        price = 10 ** rng.uniform(-10, 9)
        source = rng.choice(list(symbols))
        symbol = symbols[source].format(rng.randrange(10_000))
        tick = Tick(symbol, rng.randrange(1, 4_102_444_800_000), price, rng.uniform(0, 1e9), source)
        payloads.append(tick.to_json().decode())
    return payloads


def rejected(reason: str) -> tuple[str, str]:
    # The same reason, up to how the offending value is written: a JSON syntax error is worded by each parser's
    # library (Python's json, Jackson), and a bad value is quoted as Python's repr() or as Jackson's text.
    return ("rejected", reason if reason.startswith("missing fields") else reason.split(":", maxsplit=1)[0])


def python_verdict(payload: str) -> tuple[object, ...]:
    try:
        tick = parse_tick(payload)
    except InvalidTick as error:
        return rejected(str(error))
    return (tick.symbol, tick.event_time_ms, tick.price, tick.volume, tick.source)


@pytest.fixture(scope="module")
def jvm_parser() -> Iterator[object]:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    jars = connector_jars(REPO / ".deps" / "jars")
    assert any("ma-job-udf" in jar for jar in jars), "the MA job's Java functions are not built: run `make setup`"
    config = t_env.get_config()
    config.set("pipeline.jars", ";".join(jars))
    config.set("table.local-time-zone", "UTC")
    config.set("parallelism.default", "1")
    t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION PARSE_TICK AS '{FUNCTIONS['PARSE_TICK']}' LANGUAGE JAVA")
    yield t_env


def jvm_verdicts(t_env: object, payloads: list[str]) -> list[tuple[object, ...]]:
    table = t_env.from_elements([(i, p) for i, p in enumerate(payloads)], ["i", "payload"])  # type: ignore[attr-defined]
    t_env.create_temporary_view("payloads", table)  # type: ignore[attr-defined]
    result = t_env.sql_query(  # type: ignore[attr-defined]
        "SELECT i, p.symbol, p.ts, p.price, p.volume, p.source, p.reason "
        "FROM payloads, LATERAL TABLE(PARSE_TICK(payload)) AS p"
    )
    # In Arrow batches: collect() would cost several py4j round trips per row (over a minute for the fuzz corpus).
    frame = result.to_pandas()
    t_env.drop_temporary_view("payloads")  # type: ignore[attr-defined]
    by_index = {row[0]: row[1:] for row in frame.itertuples(index=False, name=None)}
    verdicts: list[tuple[object, ...]] = []
    for i in range(len(payloads)):
        symbol, ts, price, volume, source, reason = by_index[i]
        if isinstance(reason, str):
            verdicts.append(rejected(reason))
        else:
            millis = round(ts.to_pydatetime().replace(tzinfo=UTC).timestamp() * 1000)
            verdicts.append((symbol, millis, float(price), float(volume), source))
    return verdicts


def test_the_jvm_parser_accepts_and_rejects_what_the_python_parser_does(jvm_parser: object) -> None:
    payloads = edge_cases() + random_ticks(500)
    mismatches = [
        f"{payload!r}: python {want}, jvm {got}"
        for payload, want, got in zip(
            payloads, map(python_verdict, payloads), jvm_verdicts(jvm_parser, payloads), strict=True
        )
        if want != got
    ]
    assert not mismatches, "\n".join(mismatches)
