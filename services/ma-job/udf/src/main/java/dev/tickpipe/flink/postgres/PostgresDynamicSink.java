package dev.tickpipe.flink.postgres;

import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.sink.DynamicTableSink;
import org.apache.flink.table.connector.sink.SinkV2Provider;
import org.apache.flink.types.RowKind;

/** The planner's view of the sink: an upsert sink on the table's primary key (UPDATE_BEFORE is not needed). */
final class PostgresDynamicSink implements DynamicTableSink {
    private final PostgresSink sink;

    PostgresDynamicSink(PostgresSink sink) {
        this.sink = sink;
    }

    @Override
    public ChangelogMode getChangelogMode(ChangelogMode requested) {
        ChangelogMode.Builder mode = ChangelogMode.newBuilder();
        for (RowKind kind : requested.getContainedKinds()) {
            if (kind != RowKind.UPDATE_BEFORE) {
                mode.addContainedKind(kind);
            }
        }
        return mode.build();
    }

    @Override
    public SinkRuntimeProvider getSinkRuntimeProvider(Context context) {
        return SinkV2Provider.of(sink);
    }

    @Override
    public DynamicTableSink copy() {
        return new PostgresDynamicSink(sink);
    }

    @Override
    public String asSummaryString() {
        return "tickpipe-postgres";
    }
}
