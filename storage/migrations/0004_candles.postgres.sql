-- Plain PostgreSQL path of the candles: candles_1m is a table; candles_1h and candles_1d are views that roll it up
-- when read, so they are always exact (TimescaleDB keeps them as continuous aggregates instead).
-- Columns and meaning: see the TimescaleDB variant of this migration, which has the same relations.
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
CREATE INDEX candles_1m_open_time_brin ON candles_1m USING brin (open_time);

-- date_bin on absolute time: hour and day buckets in UTC whatever the session's TimeZone (date_trunc would use it).
CREATE VIEW candles_1h AS
SELECT source, symbol, date_bin(INTERVAL '1 hour', open_time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS open_time,
       (array_agg(open ORDER BY open_time))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY open_time DESC))[1] AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades, count(*) AS minutes
FROM candles_1m
GROUP BY source, symbol, date_bin(INTERVAL '1 hour', open_time, TIMESTAMPTZ '2000-01-01 00:00:00+00');

CREATE VIEW candles_1d AS
SELECT source, symbol, date_bin(INTERVAL '1 day', open_time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS open_time,
       (array_agg(open ORDER BY open_time))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY open_time DESC))[1] AS close,
       sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trades) AS trades, sum(minutes) AS minutes
FROM candles_1h
GROUP BY source, symbol, date_bin(INTERVAL '1 day', open_time, TIMESTAMPTZ '2000-01-01 00:00:00+00');
