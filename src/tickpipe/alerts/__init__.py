"""Price alert levels: the (symbol, level) pairs Grafana's price alert watches, kept in `price_alert_levels`."""
