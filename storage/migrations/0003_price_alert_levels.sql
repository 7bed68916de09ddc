-- Price alert levels: Grafana's rule tickpipe-price-cross fires once per (symbol, level) the price crossed.
-- They are data, not provisioning, because Grafana takes a provisioned rule's query as written (no ${...} inside
-- it). Managed with `tickpipe alert-level add|remove|list`; read by the reader role (Grafana).
CREATE TABLE price_alert_levels (
    symbol     text             NOT NULL CHECK (symbol ~ '^[A-Z0-9]{2,20}$'),  -- as in price_ticks: BTCUSDT
    level      double precision NOT NULL CHECK (level > 0 AND level < 'Infinity'),
    note       text,
    created_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, level)
);

COMMENT ON TABLE price_alert_levels IS 'Price levels per symbol; Grafana alerts when the price crosses one';
