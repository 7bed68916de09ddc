"""The ingestor's disk-backed buffer: an append-only log of Kafka records (topic, key, value) in segment files.

When the producer's in-memory queue is full (Kafka away or slow), records are appended here and produced again,
oldest first, once Kafka takes them. Layout of the folder (INGEST_SPILL_DIR; one ingestor per folder, a lock file
says which):

    <id:020d>.seg   read in id order; a record is `length u32 | crc32(body) u32 | body`, big-endian, where
                    body = topic length u16, topic, key length i32 (-1: no key), key, value
    <id:020d>.acked the byte offset in that segment up to which every record was acknowledged, kept while a replay
                    goes on (at most every SAVE_ACKED_SECONDS) and on close; the next start reads from there
    .lock           flock'ed by the ingestor using the folder; holds its pid

Appends go straight to the file (no user-space buffer), so a killed process loses nothing it appended; fsync
happens when a segment is sealed and on close, so a machine crash may lose the last seconds. A torn tail (a crash
in the middle of a write) fails its length or CRC check: reading that segment ends there and the loss is logged.

A segment is deleted once every record read from it was settled: acknowledged by Kafka or refused for good. Until
then how far it was acknowledged is kept beside it (`.acked`), so a restart does not produce those records again;
only the acknowledgements of a crash's last moments (at most SAVE_ACKED_SECONDS) are not kept, so the disk buffer is
at-least-once; the MA job drops a repeated (symbol, event time), so the table is unaffected.
Not thread-safe: the sink serialises every call under its lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from tickpipe.errors import ConfigError
from tickpipe.logs import get_logger

log = get_logger("tickpipe.ingestor")
Record = tuple[str, bytes | None, bytes]  # topic, key, value
HEADER = struct.Struct(">II")  # body length, crc32 of the body
TOPIC_LEN = struct.Struct(">H")
KEY_LEN = struct.Struct(">i")
SUFFIX = ".seg"
ACKED_SUFFIX = ".acked"
FIRST_ID = 1_000_000_000  # room below it for segments written in front of the others (see `prepend`)
READ_CHUNK = 1 << 20
MAX_SEGMENT_BYTES = 16 << 20
SAVE_ACKED_SECONDS = 0.5  # how often a replay's progress is written (the sink's delivery thread calls save_acked)


def encode(topic: str, key: bytes | None, value: bytes) -> bytes:
    name = topic.encode()
    body = b"".join((TOPIC_LEN.pack(len(name)), name, KEY_LEN.pack(-1 if key is None else len(key)), key or b"", value))
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode_body(body: bytes) -> Record:
    (topic_len,) = TOPIC_LEN.unpack_from(body, 0)
    offset = TOPIC_LEN.size
    topic = body[offset : offset + topic_len].decode()
    offset += topic_len
    (key_len,) = KEY_LEN.unpack_from(body, offset)
    offset += KEY_LEN.size
    key = None if key_len < 0 else body[offset : offset + key_len]
    offset += max(key_len, 0)
    return topic, key, body[offset:]


Ticket = tuple[int, int]  # a record handed out by `read`: its segment's id and where the record ends in it


@dataclass
class Segment:
    id: int
    path: Path
    size: int
    sealed: bool
    read_offset: int = 0
    # Every record before this offset is settled: acknowledged by Kafka or refused for good. Records settle in any
    # order (each partition acknowledges on its own), so those read after it wait in `unsettled` (their end offsets,
    # in file order) and `settled_ends` until the ones before them are settled too.
    acked: int = 0
    acked_saved: int = 0  # the offset in its `.acked` file
    unsettled: deque[int] = field(default_factory=deque)
    settled_ends: set[int] = field(default_factory=set)
    exhausted: bool = False  # sealed and read to its end

    @property
    def done(self) -> bool:
        return self.exhausted and not self.unsettled

    @property
    def acked_path(self) -> Path:
        return self.path.with_suffix(ACKED_SUFFIX)


class SpillLog:
    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int | None = None) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        # Several segments per budget, so that space comes back while a long backlog drains.
        self.segment_bytes = segment_bytes or max(4096, min(MAX_SEGMENT_BYTES, max_bytes // 8))
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise ConfigError(f"invalid INGEST_SPILL_DIR: cannot use {directory}: {error.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._lock_fd)
            raise ConfigError(
                f"invalid INGEST_SPILL_DIR: {directory} is in use by another ingestor (pid {holder}); "
                "give each ingestor its own folder"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        self.segments: list[Segment] = [
            Segment(int(path.stem), path, path.stat().st_size, sealed=True)
            for path in sorted(directory.glob(f"*{SUFFIX}"))
            if path.stem.isdigit()
        ]
        self.segments.sort(key=lambda s: s.id)
        for segment in self.segments:
            segment.read_offset = segment.acked = segment.acked_saved = _acked_offset(segment)
        for path in [*directory.glob(f"*{ACKED_SUFFIX}"), *directory.glob(f"*{ACKED_SUFFIX}.tmp")]:
            if path.suffix == ".tmp" or not path.with_suffix(SUFFIX).exists():  # torn, or its segment is gone
                path.unlink(missing_ok=True)
        self.bytes = sum(s.size for s in self.segments)
        self._write_fd: int | None = None
        self._read_fds: dict[int, int] = {}

    # -- writing -------------------------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        """Records on disk that Kafka has not acknowledged yet (or not all settled)."""
        return bool(self.segments)

    def append(self, topic: str, key: bytes | None, value: bytes) -> bool:
        """Append one record; False (nothing written) when it would exceed the budget or the disk is full."""
        data = encode(topic, key, value)
        if self.bytes + len(data) > self.max_bytes:
            return False
        segment = self._writable()
        try:
            _write_all(self._write_fd_for(segment), data)
        except OSError as error:
            # ENOSPC and the like: cut the partial record off so the segment stays readable; report as full.
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd_for(segment), segment.size)
            log.error("spill_write_failed", segment=segment.path.name, error=error.strerror)
            return False
        segment.size += len(data)
        self.bytes += len(data)
        if segment.size >= self.segment_bytes:
            self._seal(segment)
        return True

    def prepend(self, records: list[Record]) -> None:
        """Write `records` in a new segment read before every other one (outside the budget): on shutdown, what
        was still in the producer's memory is older than everything on disk."""
        if not records:
            return
        first = min((s.id for s in self.segments), default=FIRST_ID + 1)
        segment = Segment(first - 1, self.directory / f"{first - 1:020d}{SUFFIX}", 0, sealed=False)
        data = b"".join(encode(*record) for record in records)
        fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        segment.size, segment.sealed = len(data), True
        self.segments.insert(0, segment)
        self.bytes += len(data)

    def _writable(self) -> Segment:
        last = self.segments[-1] if self.segments else None
        if last is not None and not last.sealed:
            return last
        new_id = last.id + 1 if last is not None else FIRST_ID
        segment = Segment(new_id, self.directory / f"{new_id:020d}{SUFFIX}", 0, sealed=False)
        self.segments.append(segment)
        return segment

    def _write_fd_for(self, segment: Segment) -> int:
        if self._write_fd is None:
            self._write_fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self._write_fd

    def _seal(self, segment: Segment) -> None:
        if segment.sealed:
            return
        segment.sealed = True
        if self._write_fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = None

    # -- reading and settling ------------------------------------------------------------------------------------
    def read(self, max_records: int) -> list[tuple[Ticket, Record]]:
        """The next unread records, oldest first, each with the ticket `settle` takes once Kafka has it."""
        out: list[tuple[Ticket, Record]] = []
        for segment in list(self.segments):  # reading to the end of a settled segment deletes it
            if len(out) >= max_records:
                break
            if segment.exhausted:
                continue
            self._read_from(segment, max_records - len(out), out)
            if not segment.exhausted:
                break  # the segment being written: nothing newer exists yet
        return out

    def _read_from(self, segment: Segment, limit: int, out: list[tuple[Ticket, Record]]) -> None:
        fd = self._read_fds.get(segment.id)
        if fd is None:
            fd = self._read_fds[segment.id] = os.open(segment.path, os.O_RDONLY)
        taken = 0
        while taken < limit and segment.read_offset < segment.size:
            window = os.pread(fd, min(READ_CHUNK, segment.size - segment.read_offset), segment.read_offset)
            position = 0
            while taken < limit and position + HEADER.size <= len(window):
                length, crc = HEADER.unpack_from(window, position)
                end = position + HEADER.size + length
                if end > len(window):
                    if segment.read_offset + end > segment.size:
                        break  # torn: the record runs past the end of the file
                    if position == 0:  # one record larger than the window: read exactly it
                        window = os.pread(fd, end, segment.read_offset)
                        continue
                    break
                body = window[position + HEADER.size : end]
                if zlib.crc32(body) != crc:
                    break
                out.append(((segment.id, segment.read_offset + end), decode_body(body)))
                segment.unsettled.append(segment.read_offset + end)
                taken += 1
                position = end
            if position == 0:
                self._truncated(segment)
                return
            segment.read_offset += position
        if segment.read_offset >= segment.size and segment.sealed:
            self._finish(segment)

    def _truncated(self, segment: Segment) -> None:
        lost = segment.size - segment.read_offset
        log.error("spill_segment_damaged", segment=segment.path.name, offset=segment.read_offset, lost_bytes=lost)
        self._seal(segment)
        self._finish(segment)

    def _finish(self, segment: Segment) -> None:
        segment.exhausted = True
        fd = self._read_fds.pop(segment.id, None)
        if fd is not None:
            os.close(fd)
        self._collect()

    def settle(self, ticket: Ticket) -> None:
        """The record of `ticket` is acknowledged by Kafka (or refused for good)."""
        segment_id, end = ticket
        for segment in self.segments:
            if segment.id == segment_id:
                segment.settled_ends.add(end)
                while segment.unsettled and segment.unsettled[0] in segment.settled_ends:
                    segment.settled_ends.discard(segment.unsettled[0])
                    segment.acked = segment.unsettled.popleft()
                break
        self._collect()

    def _collect(self) -> None:
        while self.segments and self.segments[0].done:
            self._delete(self.segments.pop(0))

    def _delete(self, segment: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        segment.acked_path.unlink(missing_ok=True)
        self.bytes -= segment.size

    def drained(self) -> bool:
        """True when everything appended was read and settled (the files are then deleted)."""
        if any(not (s.exhausted or s.read_offset >= s.size) or s.unsettled for s in self.segments):
            return False
        for segment in self.segments:
            self._seal(segment)
            fd = self._read_fds.pop(segment.id, None)
            if fd is not None:
                os.close(fd)
            self._delete(segment)
        self.segments.clear()
        return True

    def save_acked(self) -> None:
        """Keep on disk how far each segment was acknowledged, so that a restart does not produce those records
        again."""
        for segment in self.segments:
            if segment.acked > segment.acked_saved:
                _write_acked_offset(segment)

    def close(self) -> None:
        self.save_acked()
        for segment in self.segments:
            self._seal(segment)
        for fd in self._read_fds.values():
            os.close(fd)
        self._read_fds.clear()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)


def _acked_offset(segment: Segment) -> int:
    """Where a restart starts reading `segment`: after its records acknowledged before the last stop, or at 0."""
    try:
        offset = int(segment.acked_path.read_text())
    except (OSError, ValueError):
        return 0
    return offset if 0 <= offset <= segment.size else 0


def _write_acked_offset(segment: Segment) -> None:
    path = segment.acked_path
    partial = path.with_name(path.name + ".tmp")
    try:
        partial.write_text(str(segment.acked))
        partial.replace(path)  # whole or not at all: a torn offset would skip records never acknowledged
        segment.acked_saved = segment.acked
    except OSError as error:  # the records are produced again after the restart: repeated, not lost
        log.warning("spill_offset_not_saved", segment=segment.path.name, error=error.strerror)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
