"""How much memory the local engines may take: one setting, STACK_MEMORY.

    small   a few symbols on a laptop (`make run`): Flink JobManager 320 MB and TaskManager 496 MB process size,
            Kafka heap at most 192 MB, PostgreSQL shared_buffers 64 MB, lean JVMs (below)
    large   benchmark load (tens of thousands of ticks/s, many jobs): JobManager 1 GB, TaskManager 2.5 GB,
            Kafka heap 1 GB, shared_buffers 256 MB, the G1 collector: the sizes the benchmarks were measured with
    <MB>    a budget for those four limits together, shared out as in `small` (at least small's 1,072 MB); lean
            JVMs up to LEAN_MAX_BUDGET_MB
    auto    (the default) small for `tickpipe run` up to AUTO_SMALL_MAX_TICKS ticks/s (symbols x rate), large
            above that and for `tickpipe stack up` and the test stack, which do not know their load

Those are limits, not what a process takes: a JVM touches its heap as it fills, so what the machine pays (PSS,
`tickpipe stack status`) is less, and a smaller heap caps it. Lean JVMs keep the rest low: the serial collector (no
G1 remembered sets or GC threads; pauses of a few ms on heaps this size), the client compiler only, a small initial
Kafka heap that grows only as needed, two malloc arenas per JVM instead of one per thread, fewer Kafka request
threads, and a 16 MB buffer for compacting Kafka's offsets topic instead of 128 MB, which the broker allocates (and
touches) at start-up whatever the load. Flink's own defaults (256 MB metaspace, at least 192 MB "JVM overhead" per
process, 64 MB or more of network buffers allocated at start-up) are sized for big jobs; one small job loads about
60 MB of classes per process.

Flink's TaskManager keeps 4 slots in every size: the MA job, the candle job and the tests' jobs each take one at
parallelism 1. Managed memory (the keyed engine's Python workers, RocksDB) is a budget Flink hands out, not memory
it takes up front; the Python workers are processes of their own, children of the TaskManager.
"""

from __future__ import annotations

from dataclasses import dataclass

SMALL, LARGE, AUTO = "small", "large", "auto"
# The client compiler only (no C2): its compiled code is a little slower, but C2's compiler threads and the memory
# they leave behind in malloc's arenas cost each JVM tens of MB, for loads a lean stack never sees.
LEAN_JIT = ("-XX:TieredStopAtLevel=1",)
AUTO_SMALL_MAX_TICKS = 500.0  # ticks/s a small stack carries with room to spare
SMALL_SHARES = {"kafka_heap": 192, "jobmanager": 320, "taskmanager": 496, "shared_buffers": 64}
MIN_BUDGET_MB = sum(SMALL_SHARES.values())
# Above this budget the heaps are big enough for G1 to pay off (concurrent marking, short pauses under load).
LEAN_MAX_BUDGET_MB = 2048


def check_setting(value: str) -> str:
    """STACK_MEMORY as given: auto, small, large or a whole number of MB (≥ MIN_BUDGET_MB); a clear error else."""
    setting = value.strip().lower()
    if setting in {AUTO, SMALL, LARGE}:
        return setting
    if setting.isdigit() and int(setting) >= MIN_BUDGET_MB:
        return str(int(setting))
    raise ValueError(f"expected auto, small, large or a size in MB of at least {MIN_BUDGET_MB}, got {value!r}")


@dataclass(frozen=True)
class EngineSizes:
    """The memory limits of the local engines; `label` names them (small, large or a budget in MB)."""

    label: str
    kafka_heap_mb: int
    jobmanager_mb: int
    taskmanager_mb: int
    shared_buffers_mb: int
    lean: bool

    @classmethod
    def named(cls, setting: str, ticks_per_second: float | None = None) -> EngineSizes:
        """The sizes a (checked) STACK_MEMORY setting stands for; `auto` decides by the load, when it is known."""
        setting = check_setting(setting)
        if setting == AUTO:
            small = ticks_per_second is not None and ticks_per_second <= AUTO_SMALL_MAX_TICKS
            setting = SMALL if small else LARGE
        if setting == LARGE:
            return cls(
                LARGE, kafka_heap_mb=1024, jobmanager_mb=1024, taskmanager_mb=2560, shared_buffers_mb=256, lean=False
            )
        budget = MIN_BUDGET_MB if setting == SMALL else int(setting)
        share = {name: size * budget // MIN_BUDGET_MB for name, size in SMALL_SHARES.items()}
        jobmanager = min(share["jobmanager"], 1024)  # more symbols load the TaskManager, not the JobManager
        return cls(
            setting,
            kafka_heap_mb=share["kafka_heap"],
            jobmanager_mb=jobmanager,
            taskmanager_mb=budget - share["kafka_heap"] - jobmanager - share["shared_buffers"],
            shared_buffers_mb=share["shared_buffers"],
            lean=budget <= LEAN_MAX_BUDGET_MB,
        )

    # -- Kafka -------------------------------------------------------------------------------------------------
    def kafka_jvm_options(self) -> list[str]:
        if not self.lean:
            return ["-Xms256m", f"-Xmx{self.kafka_heap_mb}m", "-XX:+UseG1GC"]
        return ["-Xms32m", f"-Xmx{self.kafka_heap_mb}m", "-XX:+UseSerialGC", *LEAN_JIT]

    def kafka_settings(self) -> dict[str, str]:
        if not self.lean:
            return {}
        return {
            # The log cleaner (it compacts __consumer_offsets) allocates this buffer at start-up, 128 MB by default.
            "log.cleaner.dedupe.buffer.size": str(16 << 20),
            # Threads for requests (8 I/O, 3 network and 10 background by default): a handful of clients need few.
            "num.io.threads": "2",
            "num.network.threads": "2",
            "background.threads": "2",
        }

    # -- Flink -------------------------------------------------------------------------------------------------
    def flink_settings(self) -> dict[str, str | float]:
        settings: dict[str, str | float] = {
            "jobmanager.memory.process.size": f"{self.jobmanager_mb}m",
            "taskmanager.memory.process.size": f"{self.taskmanager_mb}m",
        }
        if not self.lean:
            settings["taskmanager.memory.managed.fraction"] = 0.2
            # Every job leaves 10-15 MB of classes behind in a TaskManager that outlives it (its class loader is not
            # collected: the PostgreSQL driver's registration was one cause, moved to lib/; others remain), and a
            # TaskManager whose metaspace is full dies. Flink's 256 MB lasts about 17 jobs: a long-lived session
            # cluster (`tickpipe stack up`, the tests) gets room for about 35.
            settings["taskmanager.memory.jvm-metaspace.size"] = "512m"
            return settings
        # Flink's defaults for metaspace, "JVM overhead" and off-heap are sized for big jobs (module docstring).
        settings.update(
            {
                "jobmanager.memory.jvm-metaspace.size": "128m",
                "jobmanager.memory.off-heap.size": "32m",
                "jobmanager.memory.jvm-overhead.min": "64m",
                "taskmanager.memory.jvm-metaspace.size": "160m",
                "taskmanager.memory.jvm-overhead.min": "64m",
                "taskmanager.memory.framework.heap.size": "64m",
                "taskmanager.memory.framework.off-heap.size": "64m",
                # Buffers for the exchanges between operators, allocated (and touched) at start-up: a parallelism-1
                # job needs a few dozen of 32 KB, 16 MB holds 512.
                "taskmanager.memory.network.min": "16m",
                "taskmanager.memory.network.max": "16m",
                "taskmanager.memory.managed.size": "64m",
            }
        )
        return settings

    def flink_jvm_options(self) -> str:
        return " ".join(["-XX:+UseSerialGC", *LEAN_JIT]) if self.lean else "-XX:+UseG1GC"

    # -- PostgreSQL --------------------------------------------------------------------------------------------
    def postgres_options(self) -> list[str]:
        return [
            "-c",
            f"shared_buffers={self.shared_buffers_mb}MB",
            "-c",
            f"max_connections={100 if self.lean else 200}",
        ]

    # -- every JVM ---------------------------------------------------------------------------------------------
    def jvm_env(self) -> dict[str, str]:
        # glibc gives each thread that allocates its own arena (up to 8 per core), each touching memory of its own.
        return {"MALLOC_ARENA_MAX": "2"} if self.lean else {}


def describe(sizes: EngineSizes) -> str:
    return (
        f"{sizes.label}: Flink JobManager {sizes.jobmanager_mb} MB, TaskManager {sizes.taskmanager_mb} MB, "
        f"Kafka heap {sizes.kafka_heap_mb} MB, PostgreSQL shared_buffers {sizes.shared_buffers_mb} MB"
    )
