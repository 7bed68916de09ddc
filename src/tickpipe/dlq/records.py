"""Dead-letter records as `tickpipe dlq` reads them: parsed, classified, counted and shown. Pure functions.

A record is what tickpipe.schema.dead_letter writes (and the sql engine writes the same in SQL): the raw payload,
the one-line reason, the stage that rejected it (`ingestor` or `ma-job`), the source, the time, and since version 2
the payload's length and whether it was cut. A record that is not even that (written by something else) is still
shown and counted, under the kind `unreadable dead letter`, never skipped.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tickpipe.errors import CommandError
from tickpipe.schema import parse_timestamp, reason_kind

UNREADABLE = "unreadable dead letter"
# Rejections by design, not by a parser: a tick the job had already seen a newer one of. Replaying them would
# change the meaning of the windows, so `dlq replay` leaves them alone.
STALE_KINDS = frozenset({"duplicate tick", "out-of-order tick"})

_DURATION = re.compile(r"([0-9]+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    stage: str
    source: str | None
    raw: str | None
    rejected_at_ms: int | None
    raw_length: int
    raw_truncated: bool
    version: int
    partition: int = -1
    offset: int = -1

    @property
    def kind(self) -> str:
        return UNREADABLE if self.stage == "?" else reason_kind(self.reason)

    @property
    def rejected_at(self) -> str:
        if self.rejected_at_ms is None:
            return "?"
        return datetime.fromtimestamp(self.rejected_at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def matches(self, reason: str) -> bool:
        """`--reason`: the kind (case-insensitive), or any part of the reason text."""
        wanted = reason.strip().lower()
        return self.kind.lower() == wanted or wanted in self.reason.lower()


def parse_record(
    value: bytes | None, *, timestamp_ms: int | None = None, partition: int = -1, offset: int = -1
) -> DeadLetter:
    """A dead-letter topic record → DeadLetter. `timestamp_ms` (Kafka's) stands in for a missing `rejected_at`."""
    try:
        record = json.loads(value) if value is not None else None
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("reason"), str):
        text = value.decode("utf-8", errors="replace") if value is not None else None
        return DeadLetter(
            reason="not a dead-letter record",
            stage="?",
            source=None,
            raw=text,
            rejected_at_ms=timestamp_ms,
            raw_length=len(text or ""),
            raw_truncated=False,
            version=0,
            partition=partition,
            offset=offset,
        )
    raw = record.get("raw")
    raw_text = raw if isinstance(raw, str) or raw is None else json.dumps(raw)
    rejected_at_ms = timestamp_ms
    if isinstance(record.get("rejected_at"), str):
        with contextlib.suppress(ValueError):
            rejected_at_ms = parse_timestamp(record["rejected_at"])
    raw_length, version = record.get("raw_length"), record.get("v")
    return DeadLetter(
        reason=record["reason"],
        stage=str(record.get("stage") or "?"),
        source=record.get("source") if isinstance(record.get("source"), str) else None,
        raw=raw_text,
        rejected_at_ms=rejected_at_ms,
        raw_length=raw_length if isinstance(raw_length, int) else len(raw_text or ""),
        raw_truncated=record.get("raw_truncated") is True,
        version=version if isinstance(version, int) else 1,
        partition=partition,
        offset=offset,
    )


def count_by_kind(records: Iterable[DeadLetter]) -> Counter[tuple[str, str]]:
    """(stage, reason kind) → number of records."""
    return Counter((record.stage, record.kind) for record in records)


def abbreviate(raw: str | None, width: int) -> str:
    """A payload on one line of at most `width` characters (control characters escaped), with its full length."""
    if raw is None:
        return "(no payload)"
    text = _CONTROL.sub(lambda match: repr(match.group())[1:-1], raw)
    if len(text) <= width:
        return text
    return f"{text[: max(width - 20, 10)]}… ({len(raw):,} chars)"


def format_line(record: DeadLetter, width: int = 160) -> str:
    """One readable line: time, stage, reason, the raw payload abbreviated to what is left of `width`."""
    reason = record.reason if len(record.reason) <= 70 else record.reason[:69] + "…"
    head = f"{record.rejected_at}  {record.stage:<8}  {reason}"
    raw = abbreviate(record.raw, max(width - len(head) - 8, 30))
    cut = " [truncated]" if record.raw_truncated else ""
    return f"{head}  raw: {raw}{cut}"


def format_stats(counts: Counter[tuple[str, str]]) -> list[str]:
    if not counts:
        return ["no dead letters"]
    width = max(len(kind) for _, kind in counts) + 2
    lines = [f"{'STAGE':<10}{'REASON':<{width}}{'COUNT':>9}"]
    for (stage, kind), count in sorted(counts.items(), key=lambda item: (item[0][0], -item[1], item[0][1])):
        lines.append(f"{stage:<10}{kind:<{width}}{count:>9,}")
    lines.append(f"{'total':<10}{'':<{width}}{sum(counts.values()):>9,}")
    return lines


def parse_since(text: str, now: datetime | None = None) -> int:
    """`--since`: a duration back from now (90s, 15m, 6h, 7d) or an ISO-8601 time → epoch milliseconds."""
    now = now or datetime.now(UTC)
    match = _DURATION.fullmatch(text.strip())
    if match:
        moment = now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return int(moment.timestamp() * 1000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(
            f"--since expects a duration like 15m, 6h, 7d or a time like 2026-12-01T09:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
