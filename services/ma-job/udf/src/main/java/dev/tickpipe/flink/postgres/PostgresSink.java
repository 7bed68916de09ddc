package dev.tickpipe.flink.postgres;

import java.io.IOException;
import java.util.Properties;

import org.apache.flink.api.common.operators.MailboxExecutor;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.metrics.groups.SinkWriterMetricGroup;
import org.apache.flink.table.data.RowData;

/** The sink a subtask instantiates: a {@link GroupCommitWriter} over its own connection. No committer, no state. */
final class PostgresSink implements Sink<RowData> {
    private static final long serialVersionUID = 1L;

    private final TableSpec spec;
    private final String url;
    private final String username;
    private final String password;
    private final int maxRows;
    private final int maxRetries;

    PostgresSink(TableSpec spec, String url, String username, String password, int maxRows, int maxRetries) {
        this.spec = spec;
        this.url = url;
        this.username = username;
        this.password = password;
        this.maxRows = maxRows;
        this.maxRetries = maxRetries;
    }

    @Override
    public SinkWriter<RowData> createWriter(WriterInitContext context) throws IOException {
        TypeSerializer<RowData> copier = context.isObjectReuseEnabled() ? context.createInputSerializer() : null;
        return writer(copier, context.getMailboxExecutor(), context.metricGroup(),
                context.getTaskInfo().getIndexOfThisSubtask());
    }

    /** Flink 1.20 still declares this one abstract; its runtime calls the one above. */
    @Override
    @Deprecated
    public SinkWriter<RowData> createWriter(Sink.InitContext context) throws IOException {
        TypeSerializer<RowData> copier = context.isObjectReuseEnabled() ? context.createInputSerializer() : null;
        return writer(copier, context.getMailboxExecutor(), context.metricGroup(),
                context.getTaskInfo().getIndexOfThisSubtask());
    }

    private SinkWriter<RowData> writer(TypeSerializer<RowData> copier, MailboxExecutor mailbox,
            SinkWriterMetricGroup metrics, int subtask) throws IOException {
        Properties properties = new Properties();
        if (username != null) {
            properties.setProperty("user", username);
        }
        if (password != null) {
            properties.setProperty("password", password);
        }
        properties.setProperty("ApplicationName", "tickpipe-postgres " + spec.table); // in pg_stat_activity
        BatchWriter database = new BatchWriter(spec, url, properties, maxRetries);
        return new GroupCommitWriter(database, maxRows, copier, mailbox, metrics, spec.table, subtask);
    }
}
