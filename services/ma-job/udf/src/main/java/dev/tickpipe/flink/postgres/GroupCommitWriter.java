package dev.tickpipe.flink.postgres;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

import org.apache.flink.api.common.operators.MailboxExecutor;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.metrics.groups.SinkWriterMetricGroup;
import org.apache.flink.table.data.RowData;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Group commit: the task thread appends rows to a bounded buffer, and one writer thread loops "take everything
 * buffered, write it as one transaction". No timer: a row that arrives while the database is idle is written at
 * once, and while a transaction is under way the rows behind it gather into the next one, so batches grow with the
 * load by themselves (up to sink.buffer-flush.max-rows). A full buffer blocks the task thread: back-pressure.
 *
 * <p>At-least-once: {@link #flush} (before each checkpoint barrier and at the end of input) waits until every row
 * handed over is committed; a replay from the checkpoint rewrites rows the upserts make idempotent. A write that
 * fails after its retries fails the task: the error is raised in the task thread, at its next row or flush, or at
 * once through the mailbox if no row comes.
 */
final class GroupCommitWriter implements SinkWriter<RowData> {
    private static final Logger LOG = LoggerFactory.getLogger(GroupCommitWriter.class);
    private static final long CLOSE_WAIT_MILLIS = 10_000;

    private final BatchWriter database;
    private final int maxRows;
    private final TypeSerializer<RowData> copier;
    private final MailboxExecutor mailbox;
    private final String table;
    private final Counter written;
    private final Counter failed;
    private final Counter batches;
    private volatile long lastBatchRows;
    private volatile long lastBatchMillis;

    private final ReentrantLock lock = new ReentrantLock();
    /** Signalled on every change of the fields below; the two threads wait for opposite things on it. */
    private final Condition changed = lock.newCondition();
    private List<RowData> buffered = new ArrayList<>();
    private boolean writing;
    private boolean closed;
    private Throwable failure;
    private final Thread thread;

    /**
     * @param copier copies each row out of the task's reused object (object reuse is on in our jobs), or null when
     *     rows are not reused
     */
    GroupCommitWriter(BatchWriter database, int maxRows, TypeSerializer<RowData> copier, MailboxExecutor mailbox,
            SinkWriterMetricGroup metrics, String table, int subtask) throws IOException {
        this.database = database;
        this.maxRows = maxRows;
        this.copier = copier;
        this.mailbox = mailbox;
        this.table = table;
        this.written = metrics.getNumRecordsSendCounter();
        this.failed = metrics.getNumRecordsSendErrorsCounter();
        this.batches = metrics.counter("batches");
        metrics.gauge("lastBatchRows", (Gauge<Long>) () -> lastBatchRows);
        metrics.gauge("lastBatchMillis", (Gauge<Long>) () -> lastBatchMillis);
        metrics.setCurrentSendTimeGauge(() -> lastBatchMillis);
        try {
            database.open();
        } catch (java.sql.SQLException e) {
            database.close();
            throw new IOException("cannot connect to PostgreSQL to write " + table + ": " + e.getMessage(), e);
        }
        this.thread = new Thread(this::run, "tickpipe-postgres " + table + " (" + subtask + ")");
        thread.setDaemon(true);
        thread.setContextClassLoader(Thread.currentThread().getContextClassLoader());
        thread.start();
    }

    @Override
    public void write(RowData row, Context context) throws IOException, InterruptedException {
        RowData kept = copier == null ? row : copier.copy(row);
        lock.lock();
        try {
            while (buffered.size() >= maxRows && failure == null) {
                changed.await();
            }
            raiseFailure();
            buffered.add(kept);
            if (buffered.size() == 1) {
                changed.signalAll(); // the writer thread waits only while the buffer is empty
            }
        } finally {
            lock.unlock();
        }
    }

    @Override
    public void flush(boolean endOfInput) throws IOException, InterruptedException {
        lock.lock();
        try {
            while ((writing || !buffered.isEmpty()) && failure == null) {
                changed.await();
            }
            raiseFailure();
        } finally {
            lock.unlock();
        }
    }

    private void raiseFailure() throws IOException {
        if (failure != null) {
            throw new IOException("writing " + table + " failed: " + failure.getMessage(), failure);
        }
    }

    private void run() {
        while (true) {
            List<RowData> batch;
            lock.lock();
            try {
                while (buffered.isEmpty() && !closed) {
                    changed.awaitUninterruptibly();
                }
                if (closed) {
                    return;
                }
                batch = buffered;
                buffered = new ArrayList<>(Math.min(maxRows, batch.size() * 2));
                writing = true;
                changed.signalAll(); // room in the buffer again
            } finally {
                lock.unlock();
            }
            long start = System.nanoTime();
            try {
                database.write(batch);
            } catch (Throwable e) {
                fail(e, batch.size());
                return;
            }
            lastBatchMillis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
            lastBatchRows = batch.size();
            written.inc(batch.size());
            batches.inc();
            lock.lock();
            try {
                writing = false;
                changed.signalAll();
            } finally {
                lock.unlock();
            }
        }
    }

    private void fail(Throwable e, int rows) {
        lock.lock();
        try {
            if (closed) {
                return; // the task is going away (cancelled): an interrupted retry is no failure to report
            }
            failure = e;
            writing = false;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        failed.inc(rows);
        LOG.error("Writing {} rows to {} failed; the task fails and restarts from its checkpoint", rows, table, e);
        // A task with no row coming would otherwise learn of it only at its next checkpoint.
        mailbox.execute(this::raiseFailure, "tickpipe-postgres failure of " + table);
    }

    @Override
    public void close() throws Exception {
        lock.lock();
        try {
            closed = true;
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        thread.interrupt(); // ends a retry's pause
        thread.join(CLOSE_WAIT_MILLIS);
        if (thread.isAlive()) {
            database.abort(); // a write hanging on the socket: close it under the thread
            thread.join(CLOSE_WAIT_MILLIS);
        }
        database.close();
    }
}
