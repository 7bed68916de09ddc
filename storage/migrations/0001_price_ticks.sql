-- The pipeline's one table: every tick with its moving averages.
-- ma_short / ma_long are NULL until 5 / 20 ticks of the symbol have been seen (as pandas rolling(n) does).
CREATE TABLE price_ticks (
    time     timestamptz      NOT NULL,  -- the exchange's event time
    symbol   text             NOT NULL,
    price    double precision NOT NULL,
    volume   double precision NOT NULL,
    ma_short double precision,           -- MA(5)
    ma_long  double precision            -- MA(20)
);

-- One index does both jobs: the unique key that makes the job's writes idempotent upserts
-- (ON CONFLICT (symbol, time)), and the (symbol, time DESC) order every dashboard query reads in.
CREATE UNIQUE INDEX price_ticks_symbol_time ON price_ticks (symbol, time DESC);

COMMENT ON TABLE price_ticks IS 'Ticks with MA(5)/MA(20) per symbol, written by the tickpipe ma-job';
