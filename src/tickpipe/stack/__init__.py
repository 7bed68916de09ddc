"""The local stack: real engines (Kafka in KRaft mode, PostgreSQL, Flink) as local processes."""
