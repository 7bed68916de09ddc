-- Candles and their indicators: one table on both paths; the rollups differ (0005).
--
-- candles_1m: one row per (source, symbol, minute), the exchange's own closed 1m candle (Binance klines, repaired
-- from REST after a gap) or one built from ticks for sources without klines. The source is part of the key from the
-- start: the rollups (0005) are keyed the same way and outlive the raw minutes. volume is the base asset traded in
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
