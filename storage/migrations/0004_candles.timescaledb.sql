-- tickpipe: no-transaction
-- Candles and their indicators. TimescaleDB creates continuous aggregates outside a transaction.
--
-- candles_1m: one row per (source, symbol, minute), the exchange's own closed 1m candle (Binance klines, repaired
-- from REST after a gap) or one built from ticks for sources without klines. The source is part of the key from the
-- start: the rollups below are keyed the same way and outlive the raw minutes. volume is the base asset traded in
-- the minute (NULL where a source has no interval volume), quote_volume the quote asset, trades the trade count.
-- The indicators of the candle's close are NULL until warm (README: "Candle indicators"): RSI(14), Bollinger(20, 2),
-- EMA(12), EMA(26), MACD(12, 26, 9).
CREATE TABLE candles_1m (
    source       text             NOT NULL,
    symbol       text             NOT NULL,
    open_time    timestamptz      NOT NULL,
    open         double precision NOT NULL,
    high         double precision NOT NULL,
    low          double precision NOT NULL,
    close        double precision NOT NULL,
    volume       double precision,
    quote_volume double precision,
    trades       bigint,
    rsi_14       double precision,
    bb_middle    double precision,
    bb_upper     double precision,
    bb_lower     double precision,
    ema_12       double precision,
    ema_26       double precision,
    macd         double precision,
    macd_signal  double precision,
    macd_hist    double precision,
    PRIMARY KEY (source, symbol, open_time)
);
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
