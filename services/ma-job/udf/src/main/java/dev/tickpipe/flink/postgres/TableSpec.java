package dev.tickpipe.flink.postgres;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

import org.apache.flink.table.types.logical.LogicalType;

/**
 * The sink's target as the table's DDL declares it: the physical columns with their Flink types, and the primary
 * key the upserts conflict on. Every statement the sink sends is built here, with identifiers quoted, so nothing
 * about a particular table (price_ticks, candles_1m, signals) is written into the sink.
 */
final class TableSpec implements Serializable {
    private static final long serialVersionUID = 1L;

    /** The session's staging table: one per connection (pg_temp), emptied by every commit. */
    static final String STAGE = "pg_temp.tickpipe_stage";

    final String table;
    final String[] columns;
    final LogicalType[] types;
    final int[] keys;

    TableSpec(String table, String[] columns, LogicalType[] types, int[] keys) {
        this.table = table;
        this.columns = columns.clone();
        this.types = types.clone();
        this.keys = keys.clone();
    }

    /** "a"."b" for a.b: a schema-qualified name stays qualified, and a name is never parsed as SQL. */
    String quotedTable() {
        return Arrays.stream(table.split("\\.", -1)).map(TableSpec::quote).collect(Collectors.joining("."));
    }

    static String quote(String identifier) {
        return '"' + identifier.replace("\"", "\"\"") + '"';
    }

    private String columnList() {
        return Arrays.stream(columns).map(TableSpec::quote).collect(Collectors.joining(", "));
    }

    private String keyList() {
        return Arrays.stream(keys).mapToObj(i -> quote(columns[i])).collect(Collectors.joining(", "));
    }

    /** ON CONFLICT DO UPDATE of every non-key column; a table of key columns only has nothing to update. */
    private String onConflict() {
        List<String> updates = new ArrayList<>();
        for (int i = 0; i < columns.length; i++) {
            final int column = i;
            if (IntStream.of(keys).noneMatch(k -> k == column)) {
                updates.add(quote(columns[i]) + " = EXCLUDED." + quote(columns[i]));
            }
        }
        String action = updates.isEmpty() ? "DO NOTHING" : "DO UPDATE SET " + String.join(", ", updates);
        return " ON CONFLICT (" + keyList() + ") " + action;
    }

    /**
     * The staging table in the Flink types' own PostgreSQL types (what the binary COPY encodes); the merge casts to
     * the target's types as an INSERT of those values would. Temporary tables write no WAL, and ON COMMIT DELETE
     * ROWS empties it with each batch's commit.
     */
    String stageDdl() {
        String definitions = IntStream.range(0, columns.length)
                .mapToObj(i -> quote(columns[i]) + " " + PostgresTypes.stageType(types[i]))
                .collect(Collectors.joining(", "));
        return "CREATE TEMPORARY TABLE IF NOT EXISTS " + STAGE + " (" + definitions + ") ON COMMIT DELETE ROWS";
    }

    String copySql() {
        return "COPY " + STAGE + " (" + columnList() + ") FROM STDIN (FORMAT binary)";
    }

    /** One statement per batch: the batch holds each key once, so no row is hit twice (which ON CONFLICT refuses). */
    String mergeSql() {
        return "INSERT INTO " + quotedTable() + " (" + columnList() + ") SELECT " + columnList() + " FROM " + STAGE
                + onConflict();
    }

    String deleteSql() {
        String where = Arrays.stream(keys).mapToObj(i -> quote(columns[i]) + " = ?").collect(Collectors.joining(" AND "));
        return "DELETE FROM " + quotedTable() + " WHERE " + where;
    }
}
