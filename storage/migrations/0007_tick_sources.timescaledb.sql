-- TimescaleDB path: as the PostgreSQL path, with the compressed chunks decompressed around the key change and
-- compressed again after it. A unique index added while a chunk is compressed does not cover that chunk's rows: an
-- upsert into it (a replay of last week's ticks) would insert a second row instead of updating the first.
SELECT count(decompress_chunk(c, if_compressed => TRUE)) FROM show_chunks('price_ticks') c;

-- Ticks come from several sources (binance, coingecko, yahoo): the source is part of a tick's identity, so the same
-- symbol quoted by two sources never shares a row or a moving average. Rows written before are Binance's.
ALTER TABLE price_ticks ADD COLUMN source text NOT NULL DEFAULT 'binance';

-- The unique key of the job's upserts (ON CONFLICT (source, symbol, time)) and the order dashboards read in.
CREATE UNIQUE INDEX price_ticks_source_symbol_time ON price_ticks (source, symbol, time DESC);
DROP INDEX price_ticks_symbol_time;

-- What `volume` means differs per source; it is stated here, next to the data, instead of mixed without a unit.
CREATE TABLE tick_sources (
    source      text PRIMARY KEY,
    volume_kind text NOT NULL,
    description text NOT NULL
);
INSERT INTO tick_sources (source, volume_kind, description) VALUES
    ('binance', 'base asset, rolling 24 h', 'Binance spot ticker: symbol e.g. BTCUSDT; volume in the base asset over the last 24 h'),
    ('coingecko', 'quote currency, 24 h', 'CoinGecko simple/price: symbol <coin id>/<vs currency>, e.g. bitcoin/usd; volume in the vs currency over 24 h'),
    ('yahoo', 'units, cumulative for the trading day', 'Yahoo Finance streamer: symbol e.g. AAPL, BTC-USD, ^GSPC; volume traded so far in the day');

-- Compressed chunks are segmented by series, as the index is keyed: a (source, symbol) scan reads one segment.
ALTER TABLE price_ticks SET (timescaledb.compress_segmentby = 'source, symbol');
-- What the compression policy (0002: chunks older than 7 days) would compress, compressed again now.
SELECT count(compress_chunk(c, if_not_compressed => TRUE))
FROM show_chunks('price_ticks', older_than => INTERVAL '7 days') c;
