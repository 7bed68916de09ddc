"""Stage `ma-job`: PyFlink MA(5)/MA(20) per symbol, Kafka → price_ticks."""
