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
