package dev.tickpipe.flink;

import java.time.LocalDateTime;
import java.time.ZoneOffset;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;

/**
 * NEWEST_BEFORE(ts) OVER (PARTITION BY symbol ORDER BY proc): the newest event time among the partition's earlier
 * rows (NULL for its first row). A tick is new only if its time is after that: the duplicate and out-of-order
 * check the {@code sql} engine applies before the moving-average windows.
 *
 * <p>Built-in SQL needs two stacked OVER aggregates for this (a running MAX, then LAG of it), which Flink 1.20 can
 * only plan through a DataStream round trip (FLINK-35976); this is one small aggregate in one OVER.
 *
 * <p>The engine's plan uses {@link MovingAverages} since 2026-12-02, which does this check and the averages in one
 * aggregate. This one stays in the jar for the jobs of earlier commits, which register it by this name: a job
 * being rolled back to, and the previous job that tests/ma_job/test_upgrade.py runs before upgrading it.
 */
@FunctionHint(
        input = @DataTypeHint("TIMESTAMP(3)"),
        output = @DataTypeHint("TIMESTAMP(3)"))
public class NewestBefore extends AggregateFunction<LocalDateTime, NewestBefore.Accumulator> {

    /** Epoch milliseconds; Long.MIN_VALUE for "none yet". */
    public static final class Accumulator {
        public long newest = Long.MIN_VALUE;
        public long before = Long.MIN_VALUE;
    }

    @Override
    public Accumulator createAccumulator() {
        return new Accumulator();
    }

    public void accumulate(Accumulator acc, LocalDateTime ts) {
        acc.before = acc.newest;
        if (ts != null) {
            acc.newest = Math.max(acc.newest, ts.toInstant(ZoneOffset.UTC).toEpochMilli());
        }
    }

    @Override
    public LocalDateTime getValue(Accumulator acc) {
        if (acc.before == Long.MIN_VALUE) {
            return null;
        }
        return LocalDateTime.ofEpochSecond(
                Math.floorDiv(acc.before, 1000), (int) Math.floorMod(acc.before, 1000) * 1_000_000, ZoneOffset.UTC);
    }
}
