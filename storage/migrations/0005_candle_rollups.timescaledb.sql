-- tickpipe: no-transaction
-- TimescaleDB path of the rollups (continuous aggregates are created outside a transaction).
SELECT create_hypertable('candles_1m', by_range('open_time', INTERVAL '7 days'));
ALTER TABLE candles_1m SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'source, symbol',
    timescaledb.compress_orderby = 'open_time DESC'
);
-- Compressed after the window in which gap repair and late indicators can still rewrite a minute.
SELECT add_compression_policy('candles_1m', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_retention_policy('candles_1m', INTERVAL '365 days', if_not_exists => TRUE);

-- Hourly and daily candles: hierarchical continuous aggregates (1h on 1m, 1d on 1h). Real-time (materialized_only
-- = false): a query sees the materialized buckets plus the newest minutes not yet materialized, so the current hour
-- and day are always complete. The refresh windows reach back 3 and 5 days, further than gap repair looks back
-- (CANDLE_REPAIR_LOOKBACK_MINUTES is at most 2 days), so a repaired minute always reaches the rollups. Rollups
-- are kept after candles_1m's retention drops the minutes under them.
CREATE MATERIALIZED VIEW candles_1h WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT source, symbol, time_bucket(INTERVAL '1 hour', open_time) AS open_time,
       first(open, open_time) AS open, max(high) AS high, min(low) AS low, last(close, open_time) AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades, count(*) AS minutes
FROM candles_1m
GROUP BY source, symbol, time_bucket(INTERVAL '1 hour', open_time)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('candles_1h', start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 minute',
                                       schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW candles_1d WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT source, symbol, time_bucket(INTERVAL '1 day', open_time) AS open_time,
       first(open, open_time) AS open, max(high) AS high, min(low) AS low, last(close, open_time) AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades, sum(minutes) AS minutes
FROM candles_1h
GROUP BY source, symbol, time_bucket(INTERVAL '1 day', open_time)
WITH NO DATA;
SELECT add_continuous_aggregate_policy('candles_1d', start_offset => INTERVAL '5 days', end_offset => INTERVAL '1 hour',
                                       schedule_interval => INTERVAL '10 minutes', if_not_exists => TRUE);
