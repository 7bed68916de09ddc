"""The ingestor's Prometheus metrics (names prefixed `tickpipe_ingest_`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("tickpipe_ingest_messages", "Ticks received from the exchange and accepted", ["symbol"])
PRODUCED = Counter("tickpipe_ingest_produced", "Records acknowledged by Kafka", ["topic"])
PRODUCE_FAILED = Counter("tickpipe_ingest_produce_failed", "Records Kafka refused for good", ["topic"])
DEAD_LETTERS = Counter("tickpipe_ingest_dlq", "Messages sent to the dead-letter topic", ["reason"])
DUPLICATES = Counter("tickpipe_ingest_duplicates", "Ticks dropped as already sent (reconnect/rotation overlap)")
GAPS = Counter("tickpipe_ingest_gaps", "Holes in a symbol's event times after an unplanned drop", ["symbol"])
GAP_SECONDS = Counter("tickpipe_ingest_gap_seconds", "Total length of those holes", ["symbol"])
RECONNECTS = Counter("tickpipe_ingest_reconnects", "Unplanned reconnections", ["reason"])
ROTATIONS = Counter("tickpipe_ingest_rotations", "Planned connection rotations", ["trigger"])
CONNECTIONS = Gauge("tickpipe_ingest_connections", "Open exchange connections")
LAST_EVENT_AGE = Gauge("tickpipe_ingest_last_event_age_seconds", "Seconds since the last message from the exchange")
QUEUE_FULL = Gauge("tickpipe_ingest_backpressure", "1 while the producer queue is full (Kafka unreachable?)")
QUEUED = Gauge("tickpipe_ingest_producer_queue_messages", "Records waiting in the producer for Kafka")
PRODUCE_LATENCY = Histogram(
    "tickpipe_ingest_produce_latency_seconds",
    "From produce() to Kafka's acknowledgement",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
