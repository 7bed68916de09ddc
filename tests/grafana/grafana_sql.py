"""Grafana's PostgreSQL macros and template variables, expanded the way Grafana's SQL datasource does, so the
dashboard and alert queries can run against a real database in tests."""

from __future__ import annotations

import re
from datetime import datetime

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def interval_seconds(text: str) -> float:
    found = re.fullmatch(r"'?(\d+(?:\.\d+)?)(ms|s|m|h|d)'?", text.strip())
    if not found:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _time_group(column: str, interval: str, timescaledb: bool) -> str:
    seconds = interval_seconds(interval)
    if timescaledb:
        return f"time_bucket('{seconds:g}s', {column})"
    return f"floor(extract(epoch from {column})/{seconds:g})*{seconds:g}"


def expand(
    sql: str,
    *,
    time_from: datetime,
    time_to: datetime,
    interval: str = "1s",
    variables: dict[str, str] | None = None,
    timescaledb: bool = True,
) -> str:
    """`sql` with template variables, `$__interval` and the time macros replaced."""
    for name, value in (variables or {}).items():
        sql = sql.replace(f"${{{name}}}", value).replace(f"${name}", value)
    sql = sql.replace("$__interval_ms", str(int(interval_seconds(interval) * 1000))).replace("$__interval", interval)
    start, end = time_from.isoformat(), time_to.isoformat()

    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",")] if match.group(2) else []
        if name == "timeFilter":
            return f"{args[0]} BETWEEN '{start}' AND '{end}'"
        if name == "timeFrom":
            return f"'{start}'"
        if name == "timeTo":
            return f"'{end}'"
        if name == "timeGroup":
            return _time_group(args[0], args[1], timescaledb)
        if name == "timeGroupAlias":
            return _time_group(args[0], args[1], timescaledb) + ' AS "time"'
        raise ValueError(f"macro $__{name} is not supported by this expander")

    expanded = re.sub(r"\$__(\w+)\(([^()]*)\)", macro, sql)
    if "$" in expanded.replace("$values", "").replace("$labels", ""):
        raise ValueError(f"unexpanded variable left in: {expanded}")
    return expanded
