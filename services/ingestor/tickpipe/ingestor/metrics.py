"""The ingestor's Prometheus metrics (names prefixed `tickpipe_ingest_`). Per-symbol and per-feed metrics carry the
`source` (binance, coingecko, yahoo: SOURCE) too: one ingestor reads one source, several may share a Prometheus."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# Counted for every message (accepted ticks, Kafka's acknowledgements and their latency): prometheus_client takes a
# lock per inc() (a histogram's observe() one per bucket walked, in Python), ~15 % of the ingestor's CPU. These
# metrics are counted in plain lists ("cells") their owner adds to under a lock of its own, and summed when scraped:
# a scrape sees every message counted up to the one being handled, as before.


class CellCounter(Counter):
    """A labelled Counter whose series are the sums of cells (cell[0] += n, under the owner's lock)."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        super().__init__(name, documentation, labelnames)
        self._cells: dict[tuple[str, ...], tuple[float, list[list[float]]]] = {}  # labels → (created, cells)
        self._cells_lock = threading.Lock()

    def cell(self, *labels: str) -> list[float]:
        """A new cell of `labels`: only its owner adds to it, under the owner's own lock."""
        cell = [0.0]
        with self._cells_lock:
            self._cells.setdefault(labels, (time.time(), []))[1].append(cell)
        return cell

    def _multi_samples(self) -> Iterable[Sample]:
        with self._cells_lock:
            series = [(labels, created, sum(c[0] for c in cells)) for labels, (created, cells) in self._cells.items()]
        for labels, created, total in series:
            named = dict(zip(self._labelnames, labels, strict=True))
            yield Sample("_total", named, total)
            yield Sample("_created", named, created)


class CellHistogram(Histogram):
    """An unlabelled Histogram whose buckets are the sums of cells: cell[bucket index] += 1 and cell[-1] += value
    (observed), under the owner's lock; bucket_of() finds the index."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        super().__init__(name, documentation, buckets=buckets)
        self._cells: list[list[float]] = []
        self._cells_lock = threading.Lock()

    def cell(self) -> list[float]:
        cell = [0.0] * (len(self._upper_bounds) + 1)
        with self._cells_lock:
            self._cells.append(cell)
        return cell

    @property
    def bounds(self) -> list[float]:
        """The upper bounds, +Inf last: bisect_left(bounds, value) is the bucket of `value` (le: value <= bound)."""
        return self._upper_bounds

    def _child_samples(self) -> Iterable[Sample]:
        with self._cells_lock:
            totals = [sum(column) for column in zip(*self._cells, strict=True)] if self._cells else []
        totals = totals or [0.0] * (len(self._upper_bounds) + 1)
        samples, count = [], 0.0
        for bound, in_bucket in zip(self._upper_bounds, totals, strict=False):
            count += in_bucket
            le: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
            samples.append(Sample("_bucket", {"le": le}, count))
        samples += [Sample("_count", {}, count), Sample("_sum", {}, totals[-1]), Sample("_created", {}, self._created)]
        return samples


MESSAGES = CellCounter(
    "tickpipe_ingest_messages", "Ticks received from the exchange and accepted", ("source", "symbol")
)
PRODUCED = CellCounter("tickpipe_ingest_produced", "Records acknowledged by Kafka", ("topic",))
PRODUCE_FAILED = Counter("tickpipe_ingest_produce_failed", "Records Kafka refused for good", ["topic"])
DEAD_LETTERS = Counter("tickpipe_ingest_dlq", "Messages sent to the dead-letter topic", ["reason"])
DUPLICATES = Counter("tickpipe_ingest_duplicates", "Ticks dropped as already sent (reconnect/rotation overlap)")
GAPS = Counter("tickpipe_ingest_gaps", "Holes in a symbol's event times after an unplanned drop", ["source", "symbol"])
GAP_SECONDS = Counter("tickpipe_ingest_gap_seconds", "Total length of those holes", ["source", "symbol"])
RECONNECTS = Counter("tickpipe_ingest_reconnects", "Unplanned reconnections", ["reason"])
ROTATIONS = Counter("tickpipe_ingest_rotations", "Planned connection rotations", ["trigger"])
CONNECTIONS = Gauge("tickpipe_ingest_connections", "Open exchange connections")
LAST_EVENT_AGE = Gauge("tickpipe_ingest_last_event_age_seconds", "Seconds since the last message from the exchange")
QUEUE_FULL = Gauge(
    "tickpipe_ingest_backpressure", "1 while a full queue of a stalled Kafka holds the reader (no disk buffer)"
)
QUEUED = Gauge("tickpipe_ingest_producer_queue_messages", "Records waiting in the producer for Kafka")
BLOCKED_SECONDS = Gauge(
    "tickpipe_ingest_blocked_seconds", "How long the exchange's reader has been held by a full queue (no disk buffer)"
)
QUEUE_WAIT_SECONDS = Counter(
    "tickpipe_ingest_queue_wait_seconds",
    "Seconds callers waited for room in a full producer queue (Kafka slower than the exchange: flow control)",
)
EXCHANGE_CONNECTED = Gauge(
    "tickpipe_ingest_exchange_connected",
    "1 while the feed has a live exchange connection (CoinGecko: while its last poll was answered)",
    ["source", "feed"],
)
SPILL_WRITTEN = Counter("tickpipe_ingest_spill_written", "Records appended to the disk buffer (queue full)", ["topic"])
SPILL_REPLAYED = Counter(
    "tickpipe_ingest_spill_replayed", "Records from the disk buffer acknowledged by Kafka", ["topic"]
)
SPILL_DROPPED = Counter(
    "tickpipe_ingest_spill_dropped", "Records dropped: queue full and disk budget exhausted", ["topic"]
)
SPILL_BYTES = Gauge("tickpipe_ingest_spill_bytes", "Bytes in the disk buffer (segments not yet acknowledged)")
SPILL_ACTIVE = Gauge("tickpipe_ingest_spill_active", "1 while new records go to the disk buffer (until it drains)")
PRODUCE_LATENCY = CellHistogram(
    "tickpipe_ingest_produce_latency_seconds",
    "From produce() to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CANDLES = Counter(
    "tickpipe_ingest_candles",
    "Closed 1m candles published, by how they were obtained (stream: a closed kline; repair: REST after a gap)",
    ["origin"],
)
OPEN_CANDLES = Counter("tickpipe_ingest_open_candles", "Kline updates of a minute not yet closed (not published)")
CANDLE_DUPLICATES = Counter(
    "tickpipe_ingest_candle_duplicates", "Closed candles not published again (rotation overlap, already repaired)"
)
REPAIRS = Counter("tickpipe_ingest_repairs", "Gap repairs done (one per symbol and hole)", ["result"])
REPAIR_REQUESTS = Counter("tickpipe_ingest_repair_requests", "REST requests of the gap repair", ["status"])
REPAIR_WAITS = Counter(
    "tickpipe_ingest_repair_rate_limit_waits",
    "Times the gap repair waited for REST request weight (budget: our own limit; 429: the exchange's Retry-After)",
    ["reason"],
)
REPAIR_WAIT_SECONDS = Counter("tickpipe_ingest_repair_rate_limit_wait_seconds", "Seconds spent in those waits")
REPAIR_PENDING = Gauge("tickpipe_ingest_repair_pending", "Holes waiting to be repaired")
LEADER = Gauge("tickpipe_ingest_leader", "1 while this replica holds the Lease and produces (1 without election)")
LEADER_TRANSITIONS = Counter(
    "tickpipe_ingest_leader_transitions", "Times this replica became leader or standby", ["role"]
)
HANDOVER_SECONDS = Gauge(
    "tickpipe_ingest_handover_seconds", "At this replica's last takeover: how long the Lease had gone unrenewed"
)
TAKEOVER_REPLAYED = Counter(
    "tickpipe_ingest_takeover_replayed",
    "Buffered ticks produced at a takeover (read but not delivered by the old leader)",
)
STANDBY_DISCARDED = Counter(
    "tickpipe_ingest_standby_discarded", "Bad messages a standby saw and left to the leader to dead-letter"
)
SYMBOLS = Gauge("tickpipe_ingest_symbols", "Symbols subscribed (SYMBOLS=all-usdt: as last discovered)")
DISCOVERY_RUNS = Counter(
    "tickpipe_ingest_discovery_runs", "exchangeInfo look-ups of symbol discovery (SYMBOLS=all-usdt)", ["result"]
)
SYMBOL_CHANGES = Counter(
    "tickpipe_ingest_symbol_changes", "Symbols subscribed (listed) or unsubscribed (delisted) while running", ["change"]
)
SUBSCRIPTION_REQUESTS = Counter(
    "tickpipe_ingest_subscription_requests", "Live SUBSCRIBE/UNSUBSCRIBE requests sent to the exchange", ["method"]
)
POLL_REQUESTS = Counter(
    "tickpipe_ingest_poll_requests",
    "Requests of a polled source (CoinGecko), by HTTP status or error",
    ["source", "status"],
)
POLL_INTERVAL = Gauge(
    "tickpipe_ingest_poll_interval_seconds", "The polled source's interval, computed from its plan's budget", ["source"]
)
UNCHANGED = Counter(
    "tickpipe_ingest_unchanged",
    "Polled quotes not published: their update time had not changed since the last poll (not a new tick)",
    ["source"],
)
