-- Signals for programs and alerts, derived by the candle job from candles_1m's indicators (README: "Signals").
--
-- One row per (source, symbol, minute, kind); kind is one of rsi_crossed_above_70, rsi_crossed_below_30 (RSI(14) of
-- this close past the level, the previous close's RSI on the other side or at it), close_above_upper_band,
-- close_below_lower_band (this close outside Bollinger(20, 2), the previous close inside or on it). The values that
-- triggered it are stored with it. A late candle that recomputes the indicators rewrites the row (same key) or
-- deletes it when the signal no longer holds: the table always equals the signals of the complete series.
CREATE TABLE signals (
    source          text             NOT NULL,
    symbol          text             NOT NULL,
    open_time       timestamptz      NOT NULL,
    kind            text             NOT NULL,
    close           double precision NOT NULL,
    previous_close  double precision NOT NULL,
    rsi_14          double precision,
    previous_rsi_14 double precision,
    bb_upper        double precision,
    bb_middle       double precision,
    bb_lower        double precision,
    PRIMARY KEY (source, symbol, open_time, kind)
);

-- Alerts and programs ask for the newest signals of a symbol.
CREATE INDEX signals_by_time ON signals (open_time DESC);
