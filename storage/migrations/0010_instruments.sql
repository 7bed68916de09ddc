-- One asset, several sources: which series quote the same instrument, so the market board can overlay them and show
-- the spread between them. Binance quotes crypto in USDT, a stablecoin a few basis points from the dollar: that
-- basis is part of the spread shown. Rows are data: add a series with
--   INSERT INTO instruments (instrument, source, symbol) VALUES ('AAPL/USD', 'yahoo', 'AAPL');
CREATE TABLE instruments (
    instrument text NOT NULL,  -- <asset>/<currency>, e.g. BTC/USD
    source     text NOT NULL REFERENCES tick_sources (source),
    symbol     text NOT NULL,  -- in its source's stored form (tickpipe.schema.SYMBOL_RULES)
    PRIMARY KEY (source, symbol),
    UNIQUE (instrument, source)
);

INSERT INTO instruments (instrument, source, symbol) VALUES
    ('BTC/USD', 'binance', 'BTCUSDT'), ('BTC/USD', 'coingecko', 'bitcoin/usd'), ('BTC/USD', 'yahoo', 'BTC-USD'),
    ('ETH/USD', 'binance', 'ETHUSDT'), ('ETH/USD', 'coingecko', 'ethereum/usd'), ('ETH/USD', 'yahoo', 'ETH-USD'),
    ('BNB/USD', 'binance', 'BNBUSDT'), ('BNB/USD', 'coingecko', 'binancecoin/usd'), ('BNB/USD', 'yahoo', 'BNB-USD'),
    ('SOL/USD', 'binance', 'SOLUSDT'), ('SOL/USD', 'coingecko', 'solana/usd'), ('SOL/USD', 'yahoo', 'SOL-USD'),
    ('XRP/USD', 'binance', 'XRPUSDT'), ('XRP/USD', 'coingecko', 'ripple/usd'), ('XRP/USD', 'yahoo', 'XRP-USD');
