"""Gap repair: the closed 1m candles the ingestor missed, fetched from REST and published like streamed ones.

How a hole is known: each symbol's closed candles come one per minute, so a streamed candle more than a minute after
the newest one published means the minutes between were missed, whatever the cause (a dropped, stale or rotated
connection, a reader held by a full producer queue while the exchange dropped us). That test is exact and needs no
guess about which connection carried which symbol. At start-up the hole is between the newest candle published
before (candle_tail.py: read from the candle topic, at most INGEST_REPAIR_LOOKBACK_MINUTES back) and the exchange's
newest closed minute: those minutes are claimed by the repair, so the stream's copies of them are not sent twice.

Repairs run on their own thread, never on a WebSocket reader; requests stay within a weight budget (rest.py), and
only closed candles are fetched (open time + 60 s <= the exchange's clock). A repaired candle equal to a streamed one
changes nothing downstream (the candle job keeps one per minute), so a retry after a partial repair just repeats.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from confluent_kafka import KafkaException

from tickpipe.candle_schema import MINUTE_MS, InvalidCandle, WireCandle
from tickpipe.config import Settings
from tickpipe.ingestor import metrics
from tickpipe.ingestor.candle_tail import newest_candles
from tickpipe.ingestor.connection import Backoff
from tickpipe.ingestor.normalize import SOURCE, rest_candle
from tickpipe.ingestor.rest import RestBanned, RestClient, RestError
from tickpipe.ingestor.sink import KafkaSink
from tickpipe.logs import get_logger
from tickpipe.schema import format_timestamp

log = get_logger("tickpipe.ingestor")


@dataclass(frozen=True)
class Hole:
    """Minutes [first_ms, last_ms] (open times) of one symbol that were not published."""

    symbol: str
    first_ms: int
    last_ms: int
    cause: str  # stream_gap | start | takeover

    @property
    def minutes(self) -> int:
        return (self.last_ms - self.first_ms) // MINUTE_MS + 1


def newest_closed(server_ms: int) -> int:
    """The open time of the exchange's newest closed minute: open time + 60 s <= its clock."""
    return (server_ms - MINUTE_MS) // MINUTE_MS * MINUTE_MS


class CandleLedger:
    """Each symbol's newest closed candle published or claimed by a repair: decides whether a streamed candle goes
    on (not twice: a rotation's overlap, a minute already repaired) and which minutes are missing."""

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}
        self._first_streamed: dict[str, int] = {}
        self._lock = threading.Lock()

    def streamed(self, symbol: str, open_ms: int) -> tuple[bool, Hole | None]:
        """Whether to publish this streamed closed candle, and the hole before it if there is one."""
        with self._lock:
            last = self._newest.get(symbol)
            if last is None:
                self._first_streamed[symbol] = open_ms
            elif open_ms <= last:
                return False, None
            self._newest[symbol] = open_ms
            if last is not None and open_ms > last + MINUTE_MS:
                return True, Hole(symbol, last + MINUTE_MS, open_ms - MINUTE_MS, "stream_gap")
            return True, None

    def seed(
        self, symbol: str, stored_ms: int | None, floor_ms: int, closed_ms: int, *, takeover: bool = False
    ) -> Hole | None:
        """Start-up (or a standby's takeover): the newest candle on the topic (None: none within the look-back), the
        look-back's first minute and the exchange's newest closed minute → the hole to repair, if any."""
        first = floor_ms if stored_ms is None else max(stored_ms + MINUTE_MS, floor_ms)
        with self._lock:
            streamed = self._first_streamed.get(symbol)
            if streamed is not None and not takeover:  # the stream began meanwhile: the hole ends before it
                last = streamed - MINUTE_MS
            else:  # claim up to the newest closed minute: the stream's copies of those minutes are not sent again
                last = closed_ms
                known = [closed_ms, *(v for v in (stored_ms, self._newest.get(symbol)) if v is not None)]
                self._newest[symbol] = max(known)
        return Hole(symbol, first, last, "takeover" if takeover else "start") if first <= last else None


class CandlePublisher:
    """The router's hand-off for streamed closed candles: each minute once, a hole before it sent to the repair.
    With replicas only the leader publishes and repairs; a standby keeps the ledger current for its takeover."""

    def __init__(self, ledger: CandleLedger, sink: KafkaSink, repairer: Repairer, leading: Callable[[], bool]) -> None:
        self.ledger, self.sink, self.repairer, self.leading = ledger, sink, repairer, leading
        self._streamed = metrics.CANDLES.labels("stream")

    def __call__(self, candle: WireCandle) -> None:
        publish, hole = self.ledger.streamed(candle.symbol, candle.open_time_ms)
        if not publish:
            metrics.CANDLE_DUPLICATES.inc()
            return
        if not self.leading():
            return
        if hole is not None:
            log.warning(
                "candle_gap",
                symbol=hole.symbol,
                **{"from": format_timestamp(hole.first_ms)},
                to=format_timestamp(hole.last_ms),
                minutes=hole.minutes,
            )
            self.repairer.request(hole)
        self.sink.send_candle(candle)
        self._streamed.inc()


class Repairer(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        symbols: tuple[str, ...],
        ledger: CandleLedger,
        sink: KafkaSink,
        *,
        client: RestClient | None = None,
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(name="candle-repair", daemon=True)
        self.leading = leading
        self.settings, self.symbols, self.ledger, self.sink = settings, tuple(s.upper() for s in symbols), ledger, sink
        self.abort = threading.Event()  # set: stop now (the REST client's waits end too)
        self.client = client or RestClient(
            settings.binance_rest_url, settings.ingest_repair_max_weight_per_minute, self.abort
        )
        self.seeded = threading.Event()
        self.banned: str | None = None
        self._holes: queue.Queue[Hole] = queue.Queue()
        # Symbols subscribed after the start (SYMBOLS=all-usdt listings): each batch gets the start-up treatment.
        self._listed: queue.Queue[tuple[str, ...]] = queue.Queue()
        self._symbols_lock = threading.Lock()
        self._finishing = threading.Event()
        self._busy = False
        self._backoff = Backoff(base=1.0, cap=60.0)
        self._started_ms = time.time_ns() // 1_000_000  # wall clock, as the candle topic's record times

    def request(self, hole: Hole) -> None:
        """Queue a hole (any thread: the readers call this)."""
        metrics.REPAIR_PENDING.inc()
        self._holes.put(hole)

    def follow(self, listed: tuple[str, ...] = (), delisted: tuple[str, ...] = ()) -> None:
        """The symbols changed while running (any thread): a listed symbol is repaired from the topic's newest candle
        of it (or the look-back) like at start-up; a delisted one is no longer caught up at a takeover."""
        gone = {s.upper() for s in delisted}
        with self._symbols_lock:
            known = set(self.symbols)
            new = tuple(s.upper() for s in listed if s.upper() not in known)
            self.symbols = tuple(s for s in self.symbols if s not in gone) + new
        if new:
            self._listed.put(new)

    def _take_listed(self) -> tuple[str, ...]:
        taken: list[str] = []
        while True:
            try:
                taken.extend(self._listed.get_nowait())
            except queue.Empty:
                return tuple(dict.fromkeys(taken))

    def _catch_up_listed(self) -> bool:
        """The start-up repair of the symbols listed since; False if the ingestor stops meanwhile."""
        try:
            self._catch_up(takeover=False, symbols=self._take_listed())
        except RestBanned:
            pass  # said so; their holes are logged as abandoned
        except RestError:
            return False
        return True

    def run(self) -> None:
        was_leading, caught_up_before = False, False
        while not self.abort.is_set():
            leading = self.leading()
            if leading and was_leading and not self._listed.empty() and not self._catch_up_listed():
                return  # stopping
            if leading and not was_leading:  # the start, or a standby's takeover: from the topic's newest candle
                self._take_listed()  # covered: the catch-up takes every symbol followed now
                try:
                    self._catch_up(takeover=caught_up_before)
                except RestBanned:
                    pass  # said so; the holes found from now on are logged as abandoned
                except RestError:
                    return  # stopping
                finally:
                    self.seeded.set()
                caught_up_before = True
            elif not leading:
                self.seeded.set()
            was_leading = leading
            try:
                hole = self._holes.get(timeout=0.2)
            except queue.Empty:
                if self._finishing.is_set():
                    return
                continue
            self._busy = True
            try:
                if leading:  # a standby's holes are the leader's to repair
                    self._work(hole)
            finally:
                self._busy = False
                metrics.REPAIR_PENDING.dec()

    def finish(self, timeout: float) -> list[Hole]:
        """Repair what is queued for up to `timeout` s, then stop; return the holes left unrepaired (logged)."""
        self._finishing.set()
        self.join(timeout)
        self.abort.set()
        self.join(5)
        left = []
        while True:
            try:
                left.append(self._holes.get_nowait())
            except queue.Empty:
                break
        for hole in left:
            metrics.REPAIR_PENDING.dec()
            self._abandon(hole, "stopping")
        return left

    def _catch_up(self, *, takeover: bool, symbols: tuple[str, ...] | None = None) -> None:
        lookback = self.settings.ingest_repair_lookback_minutes
        if symbols is None:
            with self._symbols_lock:
                symbols = self.symbols
        if not lookback or not symbols:
            return
        server_ms = self._server_time()
        try:
            # The topic's record times are the ingestor's wall clock: the look-back in wall time, counted from now.
            since = time.time_ns() // 1_000_000 - lookback * MINUTE_MS
            # At a start, only what an earlier run published: this run's stream may have published a candle before
            # the tail is read, and starting the repair after it would skip the minutes the ingestor was away.
            # (A takeover continues the leader, whose candles are as new as its last minute.)
            before = None if takeover else self._started_ms
            stored = newest_candles(self.settings, SOURCE, symbols, since, before_ms=before)
        except KafkaException as error:
            log.warning(
                "candle_tail_unreadable",
                error=str(error),
                hint="repairing the whole look-back instead (repeated candles are harmless)",
            )
            stored = {}
        floor = server_ms // MINUTE_MS * MINUTE_MS - lookback * MINUTE_MS
        closed = newest_closed(server_ms)
        for symbol in symbols:
            hole = self.ledger.seed(symbol, stored.get(symbol), floor, closed, takeover=takeover)
            if hole is not None:
                self.request(hole)
        log.info(
            "repair_start_point",
            takeover=takeover,
            symbols=len(symbols),
            found=len(stored),
            lookback_minutes=lookback,
            newest_closed=format_timestamp(closed),
        )

    def _server_time(self) -> int:
        while True:
            try:
                return self.client.server_time()
            except RestBanned as error:
                self._banned(error)
                raise
            except RestError as error:
                delay = self._backoff.next_delay()
                if self._stopping(error, delay):
                    raise RestError("stopping") from None

    def _work(self, hole: Hole) -> None:
        if self.banned:
            self._abandon(hole, self.banned)
            return
        while not self.abort.is_set():
            try:
                self._repair(hole)
                self._backoff.reset()
                return
            except RestBanned as error:
                self._banned(error)
                self._abandon(hole, str(error))
                return
            except RestError as error:
                delay = self._backoff.next_delay()
                if self._stopping(error, delay, symbol=hole.symbol):
                    break
        self._abandon(hole, "stopping")

    def _stopping(self, error: RestError, delay: float, **context: str) -> bool:
        """After a failed request: wait `delay` s before the retry; True if the ingestor stops meanwhile (a stop does
        not wait for a REST endpoint that is failing: what is left is logged as abandoned)."""
        if self.abort.is_set() or self._finishing.is_set():
            return True
        log.warning("repair_failed", **context, error=str(error), retry_in_s=round(delay, 1))
        return self._finishing.wait(delay) or self.abort.is_set()

    def _repair(self, hole: Hole) -> None:
        last = min(hole.last_ms, newest_closed(self.client.server_time()))
        start, published, requests = hole.first_ms, 0, 0
        while start <= last:
            rows = self.client.klines(hole.symbol, start, last)
            requests += 1
            if not rows:
                break
            for row in rows:
                try:
                    candle = rest_candle(hole.symbol, row)
                except InvalidCandle as error:
                    self.sink.reject(orjson.dumps(row), str(error))
                    continue
                if start <= candle.open_time_ms <= last:
                    self._publish(candle)
                    published += 1
            following = rows[-1][0] + MINUTE_MS if isinstance(rows[-1], list) and isinstance(rows[-1][0], int) else 0
            if following <= start:
                break
            start = following
        metrics.REPAIRS.labels("done").inc()
        log.info(
            "candles_repaired",
            symbol=hole.symbol,
            cause=hole.cause,
            **{"from": format_timestamp(hole.first_ms)},
            to=format_timestamp(last),
            candles=published,
            minutes=max(0, (last - hole.first_ms) // MINUTE_MS + 1),
            requests=requests,
        )

    def _publish(self, candle: WireCandle) -> None:
        self.sink.send_candle(candle)
        metrics.CANDLES.labels("repair").inc()

    def _banned(self, error: RestError) -> None:
        self.banned = str(error)
        log.error(
            "repair_banned",
            error=str(error),
            hint="gap repair stops until the ingestor restarts; the REST weight used from this IP is too high "
            "(lower INGEST_REPAIR_MAX_WEIGHT_PER_MINUTE, or find the other client of this IP)",
        )

    def _abandon(self, hole: Hole, why: str) -> None:
        metrics.REPAIRS.labels("abandoned").inc()
        log.error(
            "repair_abandoned",
            symbol=hole.symbol,
            cause=hole.cause,
            **{"from": format_timestamp(hole.first_ms)},
            to=format_timestamp(hole.last_ms),
            minutes=hole.minutes,
            reason=why,
        )
