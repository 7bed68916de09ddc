"""The disk buffer's segment log on its own: order, budget, settling, restarts, torn tails, one owner per folder."""

from __future__ import annotations

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
    for segment_id, _ in batch:
        spill.settle(segment_id)
    assert spill.bytes == size * 6  # two whole segments acknowledged and deleted
    assert spill.append(*record(0))


def test_a_segment_is_deleted_only_when_all_its_records_are_settled(tmp_path: Path) -> None:
    spill = SpillLog(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    for i in range(10):
        spill.append(*record(i))
    files = sorted(tmp_path.glob(f"*{SUFFIX}"))
    batch = read_all(spill)
    first = batch[0][0]
    in_first = [b for b in batch if b[0] == first]
    for segment_id, _ in in_first[:-1]:
        spill.settle(segment_id)
    assert files[0].exists()
    spill.settle(first)
    assert not files[0].exists()
    assert not spill.drained()
    for segment_id, _ in batch[len(in_first) :]:
        spill.settle(segment_id)
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
