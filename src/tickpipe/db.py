"""PostgreSQL helpers shared by the stages and the local stack."""

from __future__ import annotations

import time

import psycopg

from tickpipe.errors import DatabaseNotReady


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
            if _is_tls_verification_failure(error):
                # Not a server still starting: waiting longer cannot help. Say which setting decides.
                raise DatabaseNotReady(
                    f"PostgreSQL {where or 'server'}: TLS verification failed ({_first_line(error)}); check the CA "
                    "in DATABASE_SSL_ROOT_CERT (or sslrootcert= in DATABASE_URL) and that the server's certificate "
                    "names the host in DATABASE_URL"
                ) from None
            last_error = error
        time.sleep(0.2)
    reason = _first_line(last_error) if last_error else "timed out"
    raise DatabaseNotReady(f"PostgreSQL {where or 'server'} did not answer SELECT 1 within {timeout:.0f} s: {reason}")


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_tls_verification_failure(error: Exception) -> bool:
    text = str(error)
    return "certificate verify failed" in text or "server certificate for" in text or "root certificate file" in text


def price_tick_rows(conninfo: str) -> int:
    """Rows in price_ticks; 0 while the table does not exist yet (the pipeline may still be migrating)."""
    with psycopg.connect(conninfo) as conn:
        exists = conn.execute("SELECT to_regclass('price_ticks') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT count(*) FROM price_ticks").fetchone()
    return int(row[0]) if row else 0
