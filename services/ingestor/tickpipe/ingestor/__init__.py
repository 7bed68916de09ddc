"""Stage `ingestor`: Binance WebSocket → Kafka topic price-ticks."""
