-- Plain PostgreSQL path (no TimescaleDB): a BRIN index gives cheap time-range scans on an append-mostly
-- table, the role a hypertable's chunk exclusion plays. Retention is not automated on this path.
CREATE INDEX price_ticks_time_brin ON price_ticks USING brin (time);
