-- MA(5)/MA(20) crosses join the candle job's signals (kinds ma5_crossed_above_ma20, ma5_crossed_below_ma20: MA(5) of
-- the 1m closes past MA(20), the previous candle's on the other side or equal; README: "Signals"). Every signal now
-- carries its candle's averages and the previous candle's, as it carries RSI and the band; NULL while the series is
-- not warm, and in rows written before this migration.
ALTER TABLE signals
    ADD COLUMN ma_5           double precision,
    ADD COLUMN ma_20          double precision,
    ADD COLUMN previous_ma_5  double precision,
    ADD COLUMN previous_ma_20 double precision;
