package dev.tickpipe.flink;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;

/**
 * MOVING_AVERAGE(price, n) OVER (PARTITION BY series ORDER BY proc): the mean of the row's price and the n-1 prices
 * before it, NULL until the partition has n rows. The sum is the one the {@code sql} engine computed with LAGs,
 * term by term in the same order ({@code price + LAG(price, 1) + ... + LAG(price, n-1)}, then {@code / n}), so the
 * doubles are the same to the last bit; never a running sum with retraction, which leaves rounding residue after a
 * jump across orders of magnitude.
 *
 * <p>Why not LAG: each {@code LAG(price, k)} is an aggregate of its own with a list of k values, and the OVER
 * operator converts every accumulator out of and back into its state for every row. MA(5) and MA(20) took
 * LAG(price, 1) to LAG(price, 19), about a third of the TaskManager's CPU at 30,000 ticks/s; this is one array per
 * average.
 */
@FunctionHint(
        input = {@DataTypeHint("DOUBLE"), @DataTypeHint("INT")},
        output = @DataTypeHint("DOUBLE"))
public class MovingAverage extends AggregateFunction<Double, MovingAverage.Accumulator> {

    /** The last n prices, a ring: {@code prices[next]} is the oldest once the ring is full. */
    public static final class Accumulator {
        public double[] prices = new double[0];
        public int count;
        public int next;
    }

    @Override
    public Accumulator createAccumulator() {
        return new Accumulator();
    }

    public void accumulate(Accumulator acc, Double price, Integer n) {
        if (price == null || n == null || n < 1) {
            return; // the engine's prices are never NULL; a NULL would have made every LAG sum NULL, never a value
        }
        if (acc.prices.length != n) {
            acc.prices = new double[n];
            acc.count = 0;
            acc.next = 0;
        }
        acc.prices[acc.next] = price;
        acc.next = (acc.next + 1) % n;
        acc.count = Math.min(acc.count + 1, n);
    }

    @Override
    public Double getValue(Accumulator acc) {
        int n = acc.prices.length;
        if (n == 0 || acc.count < n) {
            return null;
        }
        // Newest first, as the LAG terms were added: prices[next - 1] is this row's price.
        int at = Math.floorMod(acc.next - 1, n);
        double sum = acc.prices[at];
        for (int k = 1; k < n; k++) {
            sum += acc.prices[Math.floorMod(at - k, n)];
        }
        return sum / n;
    }
}
