"""The disk buffer's segment log on its own: order, budget, settling, restarts, torn tails, one owner per folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tickpipe.errors import ConfigError
from tickpipe.ingestor.spill import SUFFIX, SpillLog, encode

pytestmark = pytest.mark.unit


def record(i: int) -> tuple[str, bytes | None, bytes]:
    return ("price-ticks", f"SYM{i % 3}".encode(), f'{{"n":{i}}}'.encode())


def read_all(spill: SpillLog) -> list[tuple[int, tuple[str, bytes | None, bytes]]]:
    out = []
    while batch := spill.read(7):
        out.extend(batch)
    return out


def test_records_come_back_in_append_order_across_segments(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20, segment_bytes=200)
    for i in range(50):
        assert spill.append(*record(i))
    assert len(spill.segments) > 5
    assert [r for _, r in read_all(spill)] == [record(i) for i in range(50)]
    spill.close()


def test_keys_may_be_absent_and_values_large(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 24)
    big = b"x" * (3 << 20)  # larger than one read window
    spill.append("dlq", None, big)
    spill.append("t", b"", b"small")
    assert [r for _, r in read_all(spill)] == [("dlq", None, big), ("t", b"", b"small")]


def test_an_append_beyond_the_budget_is_refused_and_space_returns_once_settled(tmp_path: Path) -> None:
    size = len(encode(*record(0)))
    spill = SpillLog(tmp_path, max_bytes=size * 10, segment_bytes=size * 2)
    accepted = sum(spill.append(*record(0)) for _ in range(15))
    assert accepted == 10
    assert spill.bytes == size * 10
    batch = spill.read(4)
    for ticket, _ in batch:
        spill.settle(ticket)
    assert spill.bytes == size * 6  # two whole segments acknowledged and deleted
    assert spill.append(*record(0))


def test_a_segment_is_deleted_only_when_all_its_records_are_settled(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    for i in range(10):
        spill.append(*record(i))
    files = sorted(tmp_path.glob(f"*{SUFFIX}"))
    batch = read_all(spill)
    in_first = [ticket for ticket, _ in batch if ticket[0] == batch[0][0][0]]
    for ticket in in_first[1:]:  # all but the first: acknowledgements come in any order
        spill.settle(ticket)
    assert files[0].exists()
    spill.settle(in_first[0])
    assert not files[0].exists()
    assert not spill.drained()
    for ticket, _ in batch[len(in_first) :]:
        spill.settle(ticket)
    assert spill.drained()
    assert not list(tmp_path.glob(f"*{SUFFIX}"))


def test_a_restart_reads_what_was_not_settled_and_appends_after_it(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20, segment_bytes=150)
    for i in range(20):
        spill.append(*record(i))
    spill.read(5)  # read, never acknowledged: must come again
    spill.close()
    again = SpillLog(tmp_path, max_bytes=1 << 20, segment_bytes=150)
    assert again.pending
    again.append(*record(20))
    assert [r for _, r in read_all(again)] == [record(i) for i in range(21)]


def test_a_stop_after_acknowledgements_keeps_them_and_the_restart_reads_only_the_rest(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20)  # one segment, still being written: never deleted while running
    for i in range(10):
        spill.append(*record(i))
    for ticket, _ in spill.read(6):
        spill.settle(ticket)
    spill.close()
    again = SpillLog(tmp_path, max_bytes=1 << 20)
    batch = again.read(3)
    assert [r for _, r in batch] == [record(6), record(7), record(8)]
    # Acknowledged: the 1st and the 3rd, not the 2nd (partitions acknowledge in any order). The next start begins
    # after the 1st: the 3rd comes again (at-least-once), the 2nd is not skipped.
    again.settle(batch[0][0])
    again.settle(batch[2][0])
    again.close()
    third = SpillLog(tmp_path, max_bytes=1 << 20)
    assert [r for _, r in read_all(third)] == [record(i) for i in range(7, 10)]
    third.close()


def test_a_crash_repeats_only_what_was_acknowledged_after_the_last_save(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20)
    for i in range(10):
        spill.append(*record(i))
    for ticket, _ in spill.read(4):
        spill.settle(ticket)
    spill.save_acked()  # the sink's delivery thread does this every SAVE_ACKED_SECONDS
    for ticket, _ in spill.read(2):
        spill.settle(ticket)
    os.close(spill._lock_fd)  # killed: no close(), the kernel drops the lock
    again = SpillLog(tmp_path, max_bytes=1 << 20)
    assert [r for _, r in read_all(again)] == [record(i) for i in range(4, 10)]


def test_an_offset_of_a_deleted_segment_or_a_torn_one_is_ignored(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20)
    for i in range(3):
        spill.append(*record(i))
    spill.close()
    segment = next(tmp_path.glob(f"*{SUFFIX}"))
    segment.with_suffix(".acked").write_text("not a number")
    (tmp_path / f"{1:020d}.acked").write_text("12")  # no such segment
    (tmp_path / f"{2:020d}.acked.tmp").write_text("1")
    again = SpillLog(tmp_path, max_bytes=1 << 20)
    assert [r for _, r in read_all(again)] == [record(i) for i in range(3)]
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock")
    assert left == sorted([segment.name, f"{segment.stem}.acked"])


def test_prepend_puts_records_before_everything_on_disk(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20)
    for i in range(3, 6):
        spill.append(*record(i))
    spill.prepend([record(0), record(1), record(2)])
    spill.close()
    again = SpillLog(tmp_path, max_bytes=1 << 20)
    assert [r for _, r in read_all(again)] == [record(i) for i in range(6)]


@pytest.mark.parametrize("damage", ["torn", "flipped"])
def test_a_damaged_tail_ends_the_segment_and_the_rest_is_still_read(tmp_path: Path, damage: str) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20, segment_bytes=10_000)
    for i in range(5):
        spill.append(*record(i))
    spill.close()
    path = sorted(tmp_path.glob(f"*{SUFFIX}"))[0]
    data = path.read_bytes()
    last = len(encode(*record(4)))
    if damage == "torn":  # a crash in the middle of the last write
        path.write_bytes(data[: len(data) - last // 2])
    else:  # a flipped byte in the last record's value
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    again = SpillLog(tmp_path, max_bytes=1 << 20, segment_bytes=10_000)
    again.append(*record(5))  # a new segment after the damaged one
    assert [r for _, r in read_all(again)] == [record(i) for i in (0, 1, 2, 3, 5)]


def test_a_second_ingestor_on_the_same_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    first = SpillLog(tmp_path, max_bytes=1000)
    with pytest.raises(ConfigError, match=r"INGEST_SPILL_DIR: .* in use by another ingestor \(pid \d+\)"):
        SpillLog(tmp_path, max_bytes=1000)
    first.close()
    SpillLog(tmp_path, max_bytes=1000).close()
