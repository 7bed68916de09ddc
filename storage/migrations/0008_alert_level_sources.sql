-- Alert levels per series, (source, symbol), as price_ticks is keyed since 0007: the same symbol quoted by two
-- sources (Binance's BTCUSDT, Yahoo's BTCUSDT) has levels of its own, and Grafana's tickpipe-price-cross compares a
-- level with its own source's ticks only. Existing levels were set on Binance's ticks: they become binance rows.
ALTER TABLE price_alert_levels ADD COLUMN source text NOT NULL DEFAULT 'binance';

ALTER TABLE price_alert_levels DROP CONSTRAINT price_alert_levels_pkey;
ALTER TABLE price_alert_levels ADD CONSTRAINT price_alert_levels_pkey PRIMARY KEY (source, symbol, level);

-- Each source's symbol rule, for the stored form (tickpipe.schema.SYMBOL_RULES: upper case for binance and yahoo,
-- lower case for coingecko); tests/tools/test_alert_levels.py holds these patterns equal to the rules. An unknown
-- source is refused.
ALTER TABLE price_alert_levels DROP CONSTRAINT price_alert_levels_symbol_check;
ALTER TABLE price_alert_levels ADD CONSTRAINT price_alert_levels_symbol_check CHECK (
    CASE source
        WHEN 'binance' THEN symbol ~ '^[A-Z0-9]{2,20}$'
        WHEN 'coingecko' THEN symbol ~ '^[a-z0-9][a-z0-9-]{0,99}/[a-z]{2,10}$'
        WHEN 'yahoo' THEN symbol ~ '^\^?[A-Z0-9]+([.=-][A-Z0-9]+)*$' AND char_length(symbol) <= 20
        ELSE false
    END
);

COMMENT ON TABLE price_alert_levels IS
    'Price levels per (source, symbol); Grafana alerts when that series'' price crosses one';
