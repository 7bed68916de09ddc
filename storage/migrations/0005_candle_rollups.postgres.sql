-- Plain PostgreSQL path of the rollups: candles_1h and candles_1d are views that roll candles_1m up when read,
-- so they are always exact (TimescaleDB keeps them as continuous aggregates instead).
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
