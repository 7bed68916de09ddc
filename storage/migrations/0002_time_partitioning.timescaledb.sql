-- TimescaleDB path: price_ticks becomes a hypertable partitioned by time, compressed and expired by policy.
-- One-day chunks: at ~1 tick/s for a few hundred symbols a chunk's index stays in memory.
SELECT create_hypertable('price_ticks', by_range('time', INTERVAL '1 day'), migrate_data => TRUE);

-- Compress chunks older than a week, segmented by symbol so a symbol's range scan reads one segment.
ALTER TABLE price_ticks SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'symbol',
    timescaledb.compress_orderby = 'time DESC'
);
SELECT add_compression_policy('price_ticks', INTERVAL '7 days', if_not_exists => TRUE);

-- Raw ticks are kept 90 days.
SELECT add_retention_policy('price_ticks', INTERVAL '90 days', if_not_exists => TRUE);
