package dev.tickpipe.flink;

import java.time.LocalDateTime;
import java.time.ZoneOffset;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.types.Row;

/**
 * MOVING_AVERAGES(ts, price, short, long) OVER (PARTITION BY series ORDER BY proc): a series' duplicate check and
 * both moving averages in one aggregate, as a row {@code (newest_before, ma_short, ma_long)}.
 *
 * <ul>
 *   <li>{@code newest_before}: the newest event time among the series' earlier ticks (NULL for its first). A tick
 *       whose time is not after it is a duplicate or out of order: it is not added to the averages, and the query
 *       sends it to the dead letters.
 *   <li>{@code ma_short}, {@code ma_long}: the mean of the tick's price and the {@code n - 1} prices of the new ticks
 *       before it, NULL until the series has had {@code n} new ticks. The sum runs newest first, term by term, the
 *       order the engine's LAG sums had ({@code price + LAG(price, 1) + ... + LAG(price, n-1)}, then {@code / n}),
 *       so the doubles are the same to the last bit; never a running sum with retraction, which leaves rounding
 *       residue after a jump across orders of magnitude.
 * </ul>
 *
 * <p>Why one aggregate: the OVER operator converts each accumulator out of and back into its keyed state for every
 * row, and each OVER is an operator of its own behind a shuffle. Two OVERs (the check, then the averages of the
 * ticks that passed it) with three accumulators cost about twice this one with one ring of {@code long} prices,
 * from which both averages are read.
 */
@FunctionHint(
        input = {
            @DataTypeHint("TIMESTAMP(3)"),
            @DataTypeHint("DOUBLE"),
            @DataTypeHint("INT"),
            @DataTypeHint("INT")
        },
        output = @DataTypeHint("ROW<newest_before TIMESTAMP(3), ma_short DOUBLE, ma_long DOUBLE>"))
public class MovingAverages extends AggregateFunction<Row, MovingAverages.Accumulator> {

    /** Event times in epoch milliseconds, Long.MIN_VALUE for "none yet"; the prices a ring of the long window. */
    public static final class Accumulator {
        public long newest = Long.MIN_VALUE;
        public long before = Long.MIN_VALUE;
        public double[] prices = new double[0];
        public int count;
        public int next; // prices[next] is the oldest once the ring is full
        public int shortWindow;
    }

    @Override
    public Accumulator createAccumulator() {
        return new Accumulator();
    }

    public void accumulate(Accumulator acc, LocalDateTime ts, Double price, Integer shortWindow, Integer longWindow) {
        acc.before = acc.newest;
        if (ts == null || price == null || shortWindow == null || longWindow == null) {
            return; // never so for a parsed tick (PARSE_TICK requires both); such a row changes nothing
        }
        long millis = ts.toInstant(ZoneOffset.UTC).toEpochMilli();
        if (millis <= acc.newest) {
            return; // a duplicate or out of order: the averages are of new ticks only
        }
        acc.newest = millis;
        int n = Math.max(longWindow, shortWindow);
        if (acc.prices.length != n) {
            acc.prices = new double[n];
            acc.count = 0;
            acc.next = 0;
        }
        acc.shortWindow = shortWindow;
        acc.prices[acc.next] = price;
        acc.next = (acc.next + 1) % n;
        acc.count = Math.min(acc.count + 1, n);
    }

    @Override
    public Row getValue(Accumulator acc) {
        LocalDateTime before = acc.before == Long.MIN_VALUE
                ? null
                : LocalDateTime.ofEpochSecond(
                        Math.floorDiv(acc.before, 1000), (int) Math.floorMod(acc.before, 1000) * 1_000_000,
                        ZoneOffset.UTC);
        return Row.of(before, mean(acc, acc.shortWindow), mean(acc, acc.prices.length));
    }

    /** The newest {@code n} prices' mean, newest first; NULL until there are {@code n}. */
    private static Double mean(Accumulator acc, int n) {
        int size = acc.prices.length;
        if (n < 1 || acc.count < n) {
            return null;
        }
        int at = Math.floorMod(acc.next - 1, size); // this row's price
        double sum = acc.prices[at];
        for (int k = 1; k < n; k++) {
            sum += acc.prices[Math.floorMod(at - k, size)];
        }
        return sum / n;
    }
}
