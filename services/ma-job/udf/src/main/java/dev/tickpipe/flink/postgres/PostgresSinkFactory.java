package dev.tickpipe.flink.postgres;

import java.util.Set;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.factories.DynamicTableSinkFactory;
import org.apache.flink.table.factories.FactoryUtil;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;

/**
 * {@code 'connector' = 'tickpipe-postgres'}: upserts into a PostgreSQL table by group commit (see
 * {@link GroupCommitWriter}), each batch by binary COPY into a temporary staging table and one INSERT … SELECT … ON
 * CONFLICT. The options are those of Flink's JDBC connector that apply (no flush interval: there is no timer);
 * the columns and the conflict key are the table's DDL: its physical columns and its PRIMARY KEY … NOT ENFORCED.
 */
public final class PostgresSinkFactory implements DynamicTableSinkFactory {
    public static final String IDENTIFIER = "tickpipe-postgres";

    static final ConfigOption<String> URL = ConfigOptions.key("url").stringType().noDefaultValue()
            .withDescription("The PostgreSQL JDBC URL.");
    static final ConfigOption<String> TABLE_NAME = ConfigOptions.key("table-name").stringType().noDefaultValue()
            .withDescription("The table to upsert into (schema.table or table).");
    static final ConfigOption<String> USERNAME = ConfigOptions.key("username").stringType().noDefaultValue();
    static final ConfigOption<String> PASSWORD = ConfigOptions.key("password").stringType().noDefaultValue();
    static final ConfigOption<Integer> MAX_ROWS = ConfigOptions.key("sink.buffer-flush.max-rows").intType()
            .defaultValue(1000)
            .withDescription("The most rows in one transaction, and in the buffer before the task blocks.");
    static final ConfigOption<Integer> MAX_RETRIES = ConfigOptions.key("sink.max-retries").intType()
            .defaultValue(3)
            .withDescription("Retries of a failed transaction (1 s, 2 s, ... apart) before the task fails.");

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        return Set.of(URL, TABLE_NAME);
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        return Set.of(USERNAME, PASSWORD, MAX_ROWS, MAX_RETRIES);
    }

    @Override
    public DynamicTableSink createDynamicTableSink(Context context) {
        FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
        helper.validate();
        ReadableConfig options = helper.getOptions();
        String table = options.get(TABLE_NAME);
        int[] keys = context.getPrimaryKeyIndexes();
        if (keys.length == 0) {
            // Without a key a replay after a restart would double rows: refuse rather than write duplicates.
            throw new ValidationException(IDENTIFIER + " table " + table
                    + " needs a PRIMARY KEY (...) NOT ENFORCED: it writes idempotent upserts on that key");
        }
        int maxRows = options.get(MAX_ROWS);
        int maxRetries = options.get(MAX_RETRIES);
        if (maxRows < 1 || maxRetries < 0) {
            throw new ValidationException(IDENTIFIER + " table " + table + ": " + MAX_ROWS.key()
                    + " must be at least 1 and " + MAX_RETRIES.key() + " at least 0");
        }
        RowType row = (RowType) context.getPhysicalRowDataType().getLogicalType();
        LogicalType[] types = row.getChildren().toArray(new LogicalType[0]);
        for (LogicalType type : types) {
            PostgresTypes.stageType(type); // refuses a type the sink cannot write, now rather than at the first row
        }
        TableSpec spec = new TableSpec(table, row.getFieldNames().toArray(new String[0]), types, keys);
        PostgresSink sink = new PostgresSink(spec, options.get(URL), options.getOptional(USERNAME).orElse(null),
                options.getOptional(PASSWORD).orElse(null), maxRows, maxRetries);
        return new PostgresDynamicSink(sink);
    }
}
