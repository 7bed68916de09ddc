package dev.tickpipe.flink.postgres;

import java.io.DataOutputStream;
import java.io.IOException;
import java.sql.Date;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.Types;
import java.time.LocalDate;

import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.TimestampType;

/**
 * The Flink types the sink writes, each three ways: its staging column type, its binary COPY encoding (PostgreSQL's
 * send/recv format, big-endian), and as a JDBC parameter (the DELETE of a retracted row by its key).
 *
 * <p>A TIMESTAMP (without zone) is written as the JDBC connector writes it: a wall-clock time that PostgreSQL turns
 * into a timestamptz in the session's zone, which pgjdbc sets to the JVM's (UTC in our images and local mode).
 */
final class PostgresTypes {
    /** PostgreSQL's binary dates and timestamps count from 2000-01-01. */
    private static final long PG_EPOCH_DAY = LocalDate.of(2000, 1, 1).toEpochDay();
    private static final long PG_EPOCH_MICROS = PG_EPOCH_DAY * 86_400_000_000L;

    private PostgresTypes() {}

    /** The staging column's type; a type the sink cannot write is refused when the table is declared. */
    static String stageType(LogicalType type) {
        switch (type.getTypeRoot()) {
            case BOOLEAN:
                return "boolean";
            case SMALLINT:
                return "smallint";
            case INTEGER:
                return "integer";
            case BIGINT:
                return "bigint";
            case FLOAT:
                return "real";
            case DOUBLE:
                return "double precision";
            case CHAR:
            case VARCHAR:
                return "text";
            case DATE:
                return "date";
            case TIMESTAMP_WITHOUT_TIME_ZONE:
                return "timestamp";
            default:
                throw new ValidationException("tickpipe-postgres cannot write columns of type " + type.asSummaryString()
                        + " (it writes BOOLEAN, SMALLINT, INT, BIGINT, FLOAT, DOUBLE, STRING, DATE, TIMESTAMP)");
        }
    }

    /** One field in COPY's binary tuple format: its length (-1 for NULL), then its bytes. */
    static void encode(DataOutputStream out, RowData row, int field, LogicalType type) throws IOException {
        if (row.isNullAt(field)) {
            out.writeInt(-1);
            return;
        }
        switch (type.getTypeRoot()) {
            case BOOLEAN:
                out.writeInt(1);
                out.writeByte(row.getBoolean(field) ? 1 : 0);
                break;
            case SMALLINT:
                out.writeInt(2);
                out.writeShort(row.getShort(field));
                break;
            case INTEGER:
                out.writeInt(4);
                out.writeInt(row.getInt(field));
                break;
            case BIGINT:
                out.writeInt(8);
                out.writeLong(row.getLong(field));
                break;
            case FLOAT:
                out.writeInt(4);
                out.writeInt(Float.floatToRawIntBits(row.getFloat(field)));
                break;
            case DOUBLE:
                out.writeInt(8);
                out.writeLong(Double.doubleToRawLongBits(row.getDouble(field)));
                break;
            case CHAR:
            case VARCHAR:
                byte[] utf8 = row.getString(field).toBytes();
                out.writeInt(utf8.length);
                out.write(utf8);
                break;
            case DATE:
                out.writeInt(4);
                out.writeInt((int) (row.getInt(field) - PG_EPOCH_DAY));
                break;
            case TIMESTAMP_WITHOUT_TIME_ZONE:
                TimestampData ts = row.getTimestamp(field, ((TimestampType) type).getPrecision());
                out.writeInt(8);
                out.writeLong(ts.getMillisecond() * 1000 + ts.getNanoOfMillisecond() / 1000 - PG_EPOCH_MICROS);
                break;
            default:
                throw new IllegalStateException("unchecked type " + type); // refused by stageType at declaration
        }
    }

    /** One field as parameter `param` of a statement. */
    static void bind(PreparedStatement statement, int param, RowData row, int field, LogicalType type)
            throws SQLException {
        if (row.isNullAt(field)) {
            statement.setNull(param, sqlType(type));
            return;
        }
        switch (type.getTypeRoot()) {
            case BOOLEAN:
                statement.setBoolean(param, row.getBoolean(field));
                break;
            case SMALLINT:
                statement.setShort(param, row.getShort(field));
                break;
            case INTEGER:
                statement.setInt(param, row.getInt(field));
                break;
            case BIGINT:
                statement.setLong(param, row.getLong(field));
                break;
            case FLOAT:
                statement.setFloat(param, row.getFloat(field));
                break;
            case DOUBLE:
                statement.setDouble(param, row.getDouble(field));
                break;
            case CHAR:
            case VARCHAR:
                statement.setString(param, row.getString(field).toString());
                break;
            case DATE:
                statement.setDate(param, Date.valueOf(LocalDate.ofEpochDay(row.getInt(field))));
                break;
            case TIMESTAMP_WITHOUT_TIME_ZONE:
                int precision = ((TimestampType) type).getPrecision();
                statement.setTimestamp(param, row.getTimestamp(field, precision).toTimestamp());
                break;
            default:
                throw new IllegalStateException("unchecked type " + type);
        }
    }

    private static int sqlType(LogicalType type) {
        switch (type.getTypeRoot()) {
            case BOOLEAN:
                return Types.BOOLEAN;
            case SMALLINT:
                return Types.SMALLINT;
            case INTEGER:
                return Types.INTEGER;
            case BIGINT:
                return Types.BIGINT;
            case FLOAT:
                return Types.REAL;
            case DOUBLE:
                return Types.DOUBLE;
            case DATE:
                return Types.DATE;
            case TIMESTAMP_WITHOUT_TIME_ZONE:
                return Types.TIMESTAMP;
            default:
                return Types.VARCHAR;
        }
    }
}
