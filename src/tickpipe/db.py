"""PostgreSQL helpers shared by the stages and the local stack."""

from __future__ import annotations

import time

import psycopg


class DatabaseNotReady(RuntimeError):
    pass


def wait_for_database(conninfo: str, timeout: float = 30.0, *, where: str = "") -> None:
    """Block until `SELECT 1` succeeds; raise DatabaseNotReady naming the address at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(conninfo, connect_timeout=max(1, int(deadline - time.monotonic()))) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as error:
            last_error = error
        time.sleep(0.2)
    reason = str(last_error).strip().splitlines()[0] if last_error else "timed out"
    raise DatabaseNotReady(f"PostgreSQL {where or 'server'} did not answer SELECT 1 within {timeout:.0f} s: {reason}")
