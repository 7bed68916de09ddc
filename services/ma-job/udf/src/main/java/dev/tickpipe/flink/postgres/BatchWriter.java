package dev.tickpipe.flink.postgres;

import java.io.ByteArrayOutputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

import org.apache.flink.table.data.RowData;
import org.apache.flink.types.RowKind;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyIn;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes one batch of changelog rows as one transaction, retrying with a new connection and a growing pause; used
 * by one thread only (the sink's writer thread).
 *
 * <p>A batch holds each key once, its last change winning: an upsert statement may not touch a row twice, and the
 * rows of a batch are committed together, so only the last state of a key is ever visible anyway. Upserts go in
 * by binary COPY into the staging table and one INSERT … SELECT … ON CONFLICT, which PostgreSQL takes about as
 * fast as multi-row INSERT … ON CONFLICT, the JDBC connector's way (-8 to +22 % in the benchmark's baselines of
 * three runs on 2026-12-02, BENCHMARKS.md), with no statement text to build and parse; deletes (a retracted row) as a
 * batch of DELETEs by key.
 */
final class BatchWriter implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(BatchWriter.class);
    /** COPY's binary header: signature, flags, header extension length. */
    private static final byte[] COPY_HEADER = {
        'P', 'G', 'C', 'O', 'P', 'Y', '\n', (byte) 0xff, '\r', '\n', 0, 0, 0, 0, 0, 0, 0, 0, 0
    };

    private final TableSpec spec;
    private final String url;
    private final Properties credentials;
    private final int maxRetries;
    private final Exposed copyBuffer = new Exposed();
    private final DataOutputStream copyOut = new DataOutputStream(copyBuffer);

    private final RowData.FieldGetter[] keyGetters;

    /** Volatile: {@link #abort} reads it from the task thread. */
    private volatile Connection connection;
    private PreparedStatement delete;

    BatchWriter(TableSpec spec, String url, Properties credentials, int maxRetries) {
        this.spec = spec;
        this.url = url;
        this.credentials = credentials;
        this.maxRetries = maxRetries;
        this.keyGetters = new RowData.FieldGetter[spec.keys.length];
        for (int i = 0; i < spec.keys.length; i++) {
            keyGetters[i] = RowData.createFieldGetter(spec.types[spec.keys[i]], spec.keys[i]);
        }
    }

    /** Connects (at start-up, so that a wrong address or password fails the task at once). */
    void open() throws SQLException {
        connection();
    }

    /**
     * Commits `rows`, or throws once `maxRetries` retries have failed (or at once for an error a retry cannot fix).
     * A retry after an unknown outcome writes the same upserts again: the same result.
     */
    void write(List<RowData> rows) throws SQLException, IOException, InterruptedException {
        List<RowData> upserts = new ArrayList<>(rows.size());
        List<RowData> deletes = new ArrayList<>();
        for (RowData row : lastChangePerKey(rows)) {
            (row.getRowKind() == RowKind.DELETE ? deletes : upserts).add(row);
        }
        for (int attempt = 0; ; attempt++) {
            try {
                Connection conn = connection();
                if (!upserts.isEmpty()) {
                    copyAndMerge(conn, upserts);
                }
                if (!deletes.isEmpty()) {
                    deleteByKey(deleteStatement(conn), deletes);
                }
                conn.commit();
                return;
            } catch (SQLException e) {
                disconnect();
                if (attempt >= maxRetries || !retryable(e)) {
                    throw e;
                }
                // The same pause as Flink's JDBC connector: 1 s, 2 s, ... so that sink.max-retries means the same.
                LOG.warn("Writing {} rows to {} failed (attempt {} of {}), retrying: {}",
                        rows.size(), spec.table, attempt + 1, maxRetries + 1, e.getMessage());
                Thread.sleep(1000L * (attempt + 1));
            }
        }
    }

    private List<RowData> lastChangePerKey(List<RowData> rows) {
        Map<Key, RowData> last = new LinkedHashMap<>(rows.size() * 2);
        for (RowData row : rows) {
            Object[] key = new Object[keyGetters.length];
            for (int i = 0; i < key.length; i++) {
                key[i] = keyGetters[i].getFieldOrNull(row);
            }
            last.put(new Key(key), row);
        }
        return last.size() == rows.size() ? rows : new ArrayList<>(last.values());
    }

    private void copyAndMerge(Connection conn, List<RowData> rows) throws SQLException, IOException {
        copyBuffer.reset();
        copyOut.write(COPY_HEADER);
        for (RowData row : rows) {
            copyOut.writeShort(spec.columns.length);
            for (int i = 0; i < spec.columns.length; i++) {
                PostgresTypes.encode(copyOut, row, i, spec.types[i]);
            }
        }
        copyOut.writeShort(-1);
        copyOut.flush();
        CopyIn copy = conn.unwrap(PGConnection.class).getCopyAPI().copyIn(spec.copySql());
        try {
            copy.writeToCopy(copyBuffer.bytes(), 0, copyBuffer.size());
            copy.endCopy();
        } catch (SQLException e) {
            cancelQuietly(copy);
            throw e;
        }
        try (Statement merge = conn.createStatement()) {
            merge.executeUpdate(spec.mergeSql());
        }
    }

    private void cancelQuietly(CopyIn copy) {
        try {
            if (copy.isActive()) {
                copy.cancelCopy();
            }
        } catch (SQLException e) {
            LOG.debug("Cancelling a failed COPY into {}: {}", spec.table, e.getMessage()); // the first error counts
        }
    }

    private void deleteByKey(PreparedStatement statement, List<RowData> rows) throws SQLException {
        for (RowData row : rows) {
            for (int i = 0; i < spec.keys.length; i++) {
                PostgresTypes.bind(statement, i + 1, row, spec.keys[i], spec.types[spec.keys[i]]);
            }
            statement.addBatch();
        }
        statement.executeBatch();
    }

    private PreparedStatement deleteStatement(Connection conn) throws SQLException {
        if (delete == null) {
            delete = conn.prepareStatement(spec.deleteSql());
        }
        return delete;
    }

    private Connection connection() throws SQLException {
        if (connection == null) {
            Connection conn = new org.postgresql.Driver().connect(url, credentials);
            if (conn == null) {
                throw new SQLException("not a PostgreSQL JDBC URL: " + url.replaceAll("\\?.*", ""), "08001");
            }
            try (Statement statement = conn.createStatement()) {
                statement.execute(spec.stageDdl());
            } catch (SQLException e) {
                conn.close();
                throw e;
            }
            conn.setAutoCommit(false);
            connection = conn;
        }
        return connection;
    }

    private void disconnect() {
        Connection conn = connection;
        connection = null;
        delete = null;
        if (conn != null) {
            try {
                conn.close(); // a broken connection closes without a round trip; its prepared statements with it
            } catch (SQLException e) {
                LOG.debug("Closing a failed connection to {}: {}", spec.table, e.getMessage());
            }
        }
    }

    /**
     * Data and statement errors (classes 22, 23 and 42: a bad value, a broken constraint, a missing table or column)
     * fail the same way every time: no retry, the task fails at once with PostgreSQL's message. Anything else (a
     * lost connection, a restart, a deadlock, too many connections) may pass.
     */
    private static boolean retryable(SQLException e) {
        String state = e.getSQLState();
        return state == null || !(state.startsWith("22") || state.startsWith("23") || state.startsWith("42"));
    }

    /** Closes the connection from another thread too (the task's close while a write hangs). */
    void abort() {
        Connection conn = connection;
        if (conn != null) {
            try {
                conn.abort(Runnable::run);
            } catch (SQLException e) {
                LOG.debug("Aborting the connection to {}: {}", spec.table, e.getMessage());
            }
        }
    }

    @Override
    public void close() {
        disconnect();
    }

    /** A key of the batch: the primary key's values (Flink's internal data types compare by value). */
    private static final class Key {
        private final Object[] values;
        private final int hash;

        Key(Object[] values) {
            this.values = values;
            this.hash = Arrays.hashCode(values);
        }

        @Override
        public boolean equals(Object other) {
            return other instanceof Key && Arrays.equals(values, ((Key) other).values);
        }

        @Override
        public int hashCode() {
            return hash;
        }
    }

    /** A ByteArrayOutputStream whose bytes are handed to COPY without a copy, reused from batch to batch. */
    private static final class Exposed extends ByteArrayOutputStream {
        byte[] bytes() {
            return buf;
        }
    }
}
