"""Dead letters as `tickpipe dlq` reads them: classification, parsing, display, and what replay would do."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tickpipe.dlq import replay
from tickpipe.dlq.records import (
    UNREADABLE,
    DeadLetter,
    abbreviate,
    count_by_kind,
    format_line,
    format_stats,
    parse_record,
    parse_since,
)
from tickpipe.errors import CommandError
from tickpipe.schema import MAX_RAW_LENGTH, Tick, dead_letter, reason_kind

pytestmark = pytest.mark.unit

TICK = Tick("BTCUSDT", 1_790_000_000_123, 97000.5, 1.5)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("not JSON: Expecting value", "not JSON"),
        ("not JSON: Unexpected character ('x' (code 120)): expected a valid value", "not JSON"),
        ("not JSON", "not JSON"),
        ("price is not a number: 'abc'", "price is not a number"),
        ("price must be positive, got -1", "price must be positive"),
        ("missing fields: timestamp, price", "missing fields"),
        ("duplicate tick: event time 2026-11-24T12:00:00.000Z is not after ...", "duplicate tick"),
        ("out-of-order tick: event time 2026-11-24T12:00:00.000Z is not after ...", "out-of-order tick"),
        ("unknown message shape: event type 'trade'", "unknown message shape"),
        ('exchange error reply: {"code":2}', "exchange error reply"),
    ],
)
def test_a_reason_is_classified_by_the_text_before_its_detail(reason: str, kind: str) -> None:
    assert reason_kind(reason) == kind


def test_a_dead_letter_record_round_trips() -> None:
    letter = parse_record(dead_letter(b'{"price": "x"}', "price is not a number: 'x'", "ma-job"), partition=2, offset=7)
    assert (letter.stage, letter.kind, letter.raw, letter.version) == (
        "ma-job",
        "price is not a number",
        '{"price": "x"}',
        2,
    )
    assert (letter.raw_length, letter.raw_truncated, letter.partition, letter.offset) == (14, False, 2, 7)
    assert letter.rejected_at.endswith("Z") and letter.rejected_at_ms is not None


def test_a_payload_too_long_for_kafka_is_cut_and_marked() -> None:
    record = dead_letter("é" * (MAX_RAW_LENGTH + 10), "invalid symbol: 'ééé'…", "ingestor", source="binance")
    assert len(record) < 1_000_000
    letter = parse_record(record)
    assert letter.raw_truncated and letter.raw_length == MAX_RAW_LENGTH + 10 and len(letter.raw or "") == MAX_RAW_LENGTH


def test_a_reason_is_one_bounded_line() -> None:
    letter = parse_record(dead_letter("x", "not JSON: line one\nline two\tand\r" + "x" * 1000, "ma-job"))
    assert "\n" not in letter.reason and "\r" not in letter.reason and len(letter.reason) <= 200


def test_version_1_records_and_foreign_records_are_still_counted() -> None:
    v1 = json.dumps({"reason": "not JSON", "stage": "ingestor", "source": "binance", "raw": "{", "rejected_at": "x"})
    letter = parse_record(v1.encode(), timestamp_ms=1_790_000_000_000)
    assert (letter.version, letter.kind, letter.raw, letter.rejected_at_ms) == (1, "not JSON", "{", 1_790_000_000_000)
    foreign = parse_record(b"\xffnot a record")
    assert foreign.kind == UNREADABLE and foreign.stage == "?"
    assert parse_record(None).kind == UNREADABLE


def test_stats_count_by_stage_and_kind() -> None:
    letters = [
        parse_record(dead_letter("a", "not JSON: a", "ingestor")),
        parse_record(dead_letter("b", "not JSON: b", "ingestor")),
        parse_record(dead_letter("c", "not JSON: c", "ma-job")),
        parse_record(dead_letter("d", "price must be positive, got -1", "ma-job")),
    ]
    counts = count_by_kind(letters)
    assert counts == {("ingestor", "not JSON"): 2, ("ma-job", "not JSON"): 1, ("ma-job", "price must be positive"): 1}
    lines = format_stats(counts)
    assert lines[0].split() == ["STAGE", "REASON", "COUNT"]
    assert lines[-1].split() == ["total", "4"]
    assert format_stats(count_by_kind([])) == ["no dead letters"]


def test_a_tail_line_is_one_readable_line_with_the_payload_abbreviated() -> None:
    letter = parse_record(dead_letter("{\n" + "x" * 5000, "not JSON: Expecting value", "ma-job"))
    line = format_line(letter, width=120)
    assert "\n" not in line and len(line) <= 120
    assert "ma-job" in line and "not JSON: Expecting value" in line and "{\\n" in line and "(5,002 chars)" in line
    assert abbreviate(None, 50) == "(no payload)"


def test_since_takes_a_duration_or_a_time() -> None:
    now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert parse_since("15m", now) == int(datetime(2026, 12, 1, 9, 45, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2d", now) == int(datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp() * 1000)
    assert parse_since("2026-12-01T09:00Z", now) == int(datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp() * 1000)
    with pytest.raises(CommandError, match="--since"):
        parse_since("yesterday", now)


def letter(raw: str | bytes, reason: str, stage: str = "ma-job") -> DeadLetter:
    return parse_record(dead_letter(raw, reason, stage))


def test_replay_takes_what_todays_parser_accepts_and_says_why_not_the_rest() -> None:
    fixed = TICK.to_json().decode().replace('"price":97000.5', '"price":" 97000.5 "')
    binance = json.dumps({"stream": "x", "data": {"e": "24hrTicker", "E": 1, "s": "ethusdt", "c": "2", "v": "3"}})
    letters = [
        letter(fixed, "price is not a number: ' 97000.5 '"),
        letter(fixed, "price is not a number: ' 97000.5 '"),  # dead-lettered twice: replayed once
        letter(binance, "price is not a number: '2'", stage="ingestor"),
        letter('{"price": "abc"}', "price is not a number: 'abc'"),  # still bad today
        letter(TICK.to_json(), "duplicate tick: event time ... is not after ..."),
        letter("x" * (MAX_RAW_LENGTH + 1), "price is not a number: 'x'"),
        letter("not json", "not JSON: Expecting value"),  # another reason: not matched
    ]
    plan = replay.plan(letters, "price is not a number")
    assert plan.matched == 5
    assert plan.ticks == [Tick("BTCUSDT", TICK.event_time_ms, 97000.5, 1.5), Tick("ETHUSDT", 1, 2.0, 3.0)]
    assert plan.still_rejected == {"missing fields": 1}
    assert plan.not_replayable == {"payload truncated in the dead letter": 1}
    assert replay.plan(letters, "duplicate tick").not_replayable == {"duplicate tick (rejected by design)": 1}
    assert replay.plan(letters, "PRICE IS NOT").matched == 5  # part of the reason, any case


def test_replay_keeps_the_same_symbols_tick_from_two_sources_as_two_ticks() -> None:
    yahoo = Tick("BTCUSDT", TICK.event_time_ms, 97001.25, 7.0, "yahoo")  # the same symbol and time, another source
    letters = [
        letter(
            tick.to_json().decode().replace(f'"price":{tick.price!r}', f'"price":" {tick.price!r} "'),
            "price is not a number",
        )
        for tick in (TICK, yahoo, yahoo)
    ]
    plan = replay.plan(letters, "price is not a number")
    assert plan.ticks == [Tick("BTCUSDT", TICK.event_time_ms, 97000.5, 1.5), yahoo]  # yahoo's twice: once


def test_replay_leaves_another_sources_ingestor_payload_alone() -> None:
    record = parse_record(dead_letter('{"data": "CgRBQVBM"}', "price is not a number", "ingestor", source="yahoo"))
    plan = replay.plan([record], "price is not a number")
    assert plan.ticks == []
    assert plan.not_replayable == {"an ingestor payload of yahoo (only Binance's are re-parsed)": 1}
