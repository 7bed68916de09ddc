"""The whole pipeline on one machine: local engines, schema, simulated exchange (or Binance), ingestor, MA job and
candle job.

`start()` brings it up in dependency order and fails with one message naming the stage and its log;
`stop()` takes it down in the order that loses nothing: the simulator first (the ingestor reads to the end of
its connections), then the ingestor (it flushes to Kafka), the MA job and the candle job (each stopped with a
savepoint the next run resumes from) and the engines this run started (a stack that was already up keeps running).
What is running is written to `$TICKPIPE_HOME/run.json`, so `tickpipe top` in another terminal finds it.

Lifetime: one run per state dir (an flock on `run.lock`; a second run refuses, naming the first). Everything the
run starts dies with it, however it ends: Ctrl-C, SIGTERM and SIGHUP stop it cleanly; if it is killed, the kernel
signals its stages and engines (PR_SET_PDEATHSIG) and its watchdog (`tickpipe.run.watchdog`) kills what is left.
The next run stops any leftovers of a run that did not stop, and says so.

Supervision: `check()` (called every second by the run's loop) restarts a stage or engine process that died, with
exponential backoff; the Flink jobs resume from their newest checkpoints. More than RUN_MAX_RESTARTS restarts of one
within RUN_RESTART_WINDOW_SECONDS stop the run with one line naming it and its log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tickpipe.config import ALL_USDT, Settings, load_settings
from tickpipe.errors import StackError
from tickpipe.kafka import ensure_topics, wait_for_broker
from tickpipe.logs import get_logger
from tickpipe.metrics import sample_sum, scrape
from tickpipe.migrator.migrate import migrate
from tickpipe.run.leftovers import marker, read_state, stop_leftovers
from tickpipe.run.stages import StageProcess
from tickpipe.stack.components import FlinkCluster
from tickpipe.stack.lock import StateDirLock
from tickpipe.stack.manager import COMPONENTS, LocalStack
from tickpipe.stack.process import free_port, processes_with_argument, start_time, wait_until
from tickpipe.stack.sizing import EngineSizes, describe

log = get_logger(__name__)
Progress = Callable[[str], None]
BACKOFF_MAX_SECONDS = 30.0
# The stages that are Flink jobs submitted to the session cluster by `tickpipe ma-job [--candles]`.
FLINK_JOBS = ("ma-job", "candle-job")


@dataclass(frozen=True)
class RunOptions:
    source: str = "binance"  # binance, coingecko or yahoo: the ingestor's SOURCE
    live: bool = False  # the real service; otherwise its simulator, offline
    symbols: tuple[str, ...] = ()
    seed: int = 42
    rate: float = 1.0  # updates per second per symbol, as Binance's @ticker stream
    external: bool = False  # use the Kafka/PostgreSQL/Flink given by env instead of starting the local stack
    record: Path | None = None  # where the simulator records every tick it sends (end-to-end checks)
    max_ticks: int | None = None  # the simulator stops publishing after this many updates
    # An exchange already running (ws://host:port, REST on the same port): the ingestor connects there and no simulator
    # is started (the benchmark's load generator, bench/loadgen.py).
    exchange_url: str | None = None
    # The candle job (candles_1m with indicators, signals; candles built from ticks). False: not started, the MA job
    # alone, and the ingestor streams no klines (`tickpipe run --no-candles`, the benchmark's "features off").
    candles: bool = True


class SourceUnreachable(StackError):
    pass


class RestartLimitReached(StackError):
    pass


def check_reachable(source: str, url: str, timeout: float = 5.0) -> None:
    """Fail fast, before starting anything, when the exchange's host cannot be reached (DNS + TCP)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        reason = error.strerror or type(error).__name__
    raise SourceUnreachable(
        f"cannot reach {source} at {url} (tried DNS + TCP to {host}:{port} within {timeout:.0f} s: {reason}). "
        f"No network? Run offline on its simulator: `make run SOURCE={source}` (or `tickpipe run --source {source}`)."
    )


@dataclass
class Supervised:
    """Restart bookkeeping of one stage or engine process."""

    failures: deque[float] = field(default_factory=deque)  # monotonic times of recent deaths
    restarts: int = 0
    restart_at: float | None = None  # a death was seen: restart at this monotonic time
    exit_code: int | None = None


@dataclass
class LocalPipeline:
    settings: Settings
    home: Path
    options: RunOptions
    stages: dict[str, StageProcess] = field(default_factory=dict)
    metrics_urls: dict[str, str] = field(default_factory=dict)
    engines: list[str] = field(default_factory=list)  # the engines this run started (and stops, and restarts)
    supervised: dict[str, Supervised] = field(default_factory=dict)
    exchange_url: str = ""
    _lock: StateDirLock | None = None
    _watchdog: subprocess.Popen[bytes] | None = None
    _since: str = ""

    @property
    def state_file(self) -> Path:
        return self.home / "run.json"

    @property
    def symbols(self) -> tuple[str, ...]:
        if self.options.symbols:
            return self.options.symbols
        if self.settings.source == self.options.source:
            return self.settings.symbols
        return load_settings(source=self.options.source).symbols  # the source's own default symbols

    @property
    def source_url(self) -> str:
        """Where the live source is (its setting): what --live checks and the ingestor connects to."""
        return {
            "binance": self.settings.binance_ws_url,
            "coingecko": self.settings.coingecko_url,
            "yahoo": self.settings.yahoo_ws_url,
        }[self.options.source]

    @property
    def stack(self) -> LocalStack:
        # STACK_MEMORY=auto sizes the engines by this run's load: Binance's ticker streams send about 1 update/s.
        # SYMBOLS=all-usdt is hundreds of symbols, known only once the ingestor asked the exchange: no known load.
        discovered = ALL_USDT in self.symbols
        load = None if discovered else len(self.symbols) * (1.0 if self.options.live else self.options.rate)
        sizes = EngineSizes.named(self.settings.stack_memory, ticks_per_second=load)
        return LocalStack(self.home, self.settings.jars_dir.resolve(), tied_to_caller=True, sizes=sizes)

    def flink_jobs(self) -> list[tuple[str, list[str], str]]:
        """The Flink job stages this run starts, in order: (stage, `tickpipe` arguments, the progress line)."""
        jobs = [
            (
                "ma-job",
                ["ma-job", "--resume-if-possible"],
                "starting the MA job on Flink (resuming from the last checkpoint if there is one)",
            )
        ]
        if self.options.candles:
            jobs.append(
                (
                    "candle-job",
                    ["ma-job", "--candles", "--resume-if-possible"],
                    "starting the candle job on Flink (candles → candles_1m with indicators, signals)",
                )
            )
        return jobs

    # -- start -------------------------------------------------------------------------------------------------
    def start(self, progress: Progress) -> Settings:
        self._claim(progress)
        if self.options.live:
            progress(f"checking that {self.options.source} is reachable at {self.source_url}")
            check_reachable(self.options.source, self.source_url)
        if not self.options.external:
            stack = self.stack
            already = [row.component for row in stack.status() if row.running]
            progress(f"starting the local engines (Kafka KRaft, PostgreSQL, Flink), memory {describe(stack.sizes)}")
            exports = stack.up()
            self.engines = stack.started
            kept = sorted(set(COMPONENTS) - set(self.engines) & set(already))
            if kept:
                progress(f"using the engines already running ({', '.join(kept)}): they keep running after this run")
            os.environ.update(exports)
            self.settings = load_settings()
            self._write_state()
        progress(f"waiting for Kafka at {self.settings.kafka_bootstrap_servers}")
        wait_for_broker(self.settings, timeout=60)
        ensure_topics(self.settings)
        progress("applying the schema (tickpipe migrate)")
        migrate(self.settings)

        self.exchange_url = self.options.exchange_url or self.source_url
        if not self.options.live and not self.options.exchange_url:
            progress(f"starting the simulated {self.options.source} ({len(self.symbols)} symbols)")
            sim = self._stage("sim", ["sim", "--exchange", self.options.source, "--port", "0", *self._sim_args()])
            self.exchange_url = sim.wait_for_line("READY ", timeout=30).split()[1]
            # A restarted simulator listens where the ingestor already connects.
            sim.args[sim.args.index("--port") + 1] = str(urlsplit(self.exchange_url).port)
        progress(f"starting the ingestor ({self.options.source})")
        ingest_port = free_port()
        ingestor = self._stage(
            "ingestor",
            ["ingest", "--symbols", ",".join(self.symbols)],
            source_env=self._source_env(),
            SOURCE=self.options.source,
            METRICS_PORT=str(ingest_port),
            # Without the candle job nobody stores klines: the ingestor neither streams nor repairs them.
            INGEST_KLINES=str(self.settings.ingest_klines and self.options.candles).lower(),
        )
        self.metrics_urls["ingestor"] = f"http://127.0.0.1:{ingest_port}"
        for name, args, line in self.flink_jobs():
            progress(line)
            self._stage(name, args, stop_signal=signal.SIGINT)
        ingestor.check_alive()
        self._write_state()
        return self.settings

    def _claim(self, progress: Progress) -> None:
        """Take the state dir (or refuse, naming the run that has it), stop what a crashed run left, start the
        watchdog."""
        lock = StateDirLock(self.home)
        lock.acquire()
        self._lock = lock
        self._since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        previous = read_state(self.home)
        if previous or processes_with_argument(marker(self.home)):
            stopped = stop_leftovers(self.home, previous)
            if stopped:
                who = f"pid {previous.get('pid')}, since {previous.get('since')}" if previous else "unrecorded"
                progress(f"stopped the leftovers of an earlier run that did not stop ({who}): {', '.join(stopped)}")
                log.warning("run_leftovers_stopped", previous_pid=previous.get("pid"), stopped=stopped)
            self.state_file.unlink(missing_ok=True)
        self._write_state()
        log_path = self.home / "logs" / "watchdog.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as watchdog_log:
            self._watchdog = subprocess.Popen(
                [
                    sys.executable,
                    "-X",
                    marker(self.home),
                    "-m",
                    "tickpipe.run.watchdog",
                    str(self.home),
                    str(os.getpid()),
                ],
                stdin=subprocess.PIPE,
                stdout=watchdog_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._write_state()

    def _stage(
        self,
        name: str,
        args: list[str],
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        source_env: dict[str, str] | None = None,
        **env: str,
    ) -> StageProcess:
        stage = StageProcess(
            name,
            args,
            self.home / "logs" / f"{name}.log",
            env={**os.environ, "LOG_FORMAT": "json", **(source_env or {}), **env},
            stop_signal=stop_signal,
            marker=marker(self.home),
            tied_to_parent=True,  # started (and restarted) from the run's main thread only
        )
        self.stages[name] = stage
        stage.start()
        self._write_state()
        return stage

    def _sim_args(self) -> list[str]:
        """The simulator's options for this run: the symbols, seed and update rate, in each one's terms."""
        options = self.options
        common = ["--seed", str(options.seed), "--rate", str(options.rate)]
        if options.source == "coingecko":
            # CoinGecko's ids (bitcoin of bitcoin/usd); prices refreshed at the run's rate, not the free tiers'
            # once a minute, and a plan that lets the poller keep up (_source_env).
            ids = dict.fromkeys(symbol.split("/")[0] for symbol in self.symbols)
            refresh = 1.0 / options.rate
            return [
                "--symbols",
                ",".join(ids),
                *common,
                "--refresh-seconds",
                f"{refresh:g}",
                "--calls-per-minute",
                "600",
            ]
        if options.source == "yahoo":
            return common  # Yahoo's streamer quotes what its clients subscribe to
        return [
            "--symbols",
            ",".join(self.symbols),
            *common,
            *(["--record", str(options.record)] if options.record else []),
            *(["--max-ticks", str(options.max_ticks)] if options.max_ticks else []),
        ]

    def _source_env(self) -> dict[str, str]:
        """The ingestor's settings for where its source is: the simulator's address offline, the settings' live."""
        url = self.exchange_url
        if self.options.source == "coingecko":
            if self.options.live:
                return {}
            # The simulator's plan: one poll per refresh (60 a minute at rate 1), no monthly cap.
            per_minute = max(1, round(60 * self.options.rate / self.settings.coingecko_budget_share))
            return {"COINGECKO_URL": url, "COINGECKO_CALLS_PER_MINUTE": str(per_minute), "COINGECKO_MONTHLY_CALLS": "0"}
        if self.options.source == "yahoo":
            return {} if self.options.live else {"YAHOO_WS_URL": url}
        return {
            "BINANCE_WS_URL": url,
            # The simulator answers REST on its WebSocket port (gap repair); live, the setting's own URL.
            "BINANCE_REST_URL": self.settings.binance_rest_url
            if self.options.live
            else "http" + url.removeprefix("ws"),
        }

    def _write_state(self) -> None:
        watchdog = self._watchdog.pid if self._watchdog else None
        state: dict[str, Any] = {
            "pid": os.getpid(),
            "since": self._since,
            "started": start_time(os.getpid()),
            "source": self.options.source,
            "live": self.options.live,
            "exchange_url": self.exchange_url,
            "symbols": list(self.symbols),
            "engines": self.engines,
            "watchdog": watchdog,
            "stages": {
                name: {
                    "pid": stage.pid,
                    "started": stage.started,
                    "stop_signal": int(stage.stop_signal),
                    "log": str(stage.log_path),
                    "metrics_url": self.metrics_urls.get(name),
                }
                for name, stage in self.stages.items()
            },
            "restarts": {name: item.restarts for name, item in self.supervised.items() if item.restarts},
        }
        self.home.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2))
        temporary.replace(self.state_file)  # `tickpipe top` and the watchdog never read half a file

    # -- supervision -------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Restart what died (after its backoff); raise RestartLimitReached when one keeps dying."""
        now = time.monotonic()
        for name, stage in self.stages.items():
            code = stage.exit_code()
            if code is not None:
                self._died(name, code, stage.log_path, now)
        if self.engines:
            stack = self.stack
            for component in self.engines:
                for process in stack.dead_processes(component):
                    self._died(process, None, stack.log_dir / f"{process}.log", now)
        for name, item in list(self.supervised.items()):
            if item.restart_at is not None and now >= item.restart_at and self._ready_to_restart(name):
                self._restart(name, item)

    def _died(self, name: str, code: int | None, log_path: Path, now: float) -> None:
        item = self.supervised.setdefault(name, Supervised())
        if item.restart_at is not None:
            return  # already scheduled
        window = self.settings.run_restart_window_seconds
        while item.failures and item.failures[0] < now - window:
            item.failures.popleft()
        item.failures.append(now)
        if len(item.failures) > self.settings.run_max_restarts:
            log.error("stage_failing", stage=name, failures=len(item.failures), window_s=window, log=str(log_path))
            raise RestartLimitReached(
                f"{name} died {len(item.failures)} times within {window:.0f} s (RUN_MAX_RESTARTS="
                f"{self.settings.run_max_restarts}); stopping the run; see its log {log_path}"
            )
        delay = min(BACKOFF_MAX_SECONDS, 2.0 ** (len(item.failures) - 1))
        item.restart_at, item.exit_code = now + delay, code
        log.warning("stage_died", stage=name, exit_code=code, restart_in_s=delay, log=str(log_path))

    def _ready_to_restart(self, name: str) -> bool:
        """The Flink jobs are submitted to Flink: wait (without counting a failure) until Flink answers again."""
        if name not in FLINK_JOBS or "flink" not in self.engines:
            return True
        try:
            FlinkCluster(self.home / "flink", self.home / "logs", self.stack.ports("flink")).check_ready()
        except StackError:
            return False
        return True

    def _restart(self, name: str, item: Supervised) -> None:
        item.restart_at = None
        item.restarts += 1
        if name in self.stages:
            stage = self.stages[name]
            stage.kill_group()  # what the dead stage left (a Flink client)
            stage.start()
            pid = stage.pid
        else:
            component = next(c for c in self.engines if name in self.stack.pids((c,)))
            pid = self.stack.restart_process(component, name)
            for job_stage in FLINK_JOBS if name == "flink-jobmanager" else ():
                if job_stage not in self.stages:
                    continue
                # A session cluster without HA forgets its jobs with its JobManager: submit each job again, from
                # its newest checkpoint, once Flink answers.
                self.stages[job_stage].kill_group()
                job = self.supervised.setdefault(job_stage, Supervised())
                job.restart_at, job.exit_code = time.monotonic(), None
        log.warning("stage_restarted", stage=name, restarts=item.restarts, pid=pid, previous_exit_code=item.exit_code)
        self._write_state()

    # -- stop --------------------------------------------------------------------------------------------------
    def _wait_ingestor_drained(self, timeout: float = 10.0) -> None:
        """Until the ingestor has read its connections to the end (it reports none open)."""
        url = self.metrics_urls.get("ingestor")
        if not url or "ingestor" not in self.stages:
            return

        def drained() -> bool:
            try:
                samples = scrape(f"{url}/metrics")
            except OSError:
                return True  # not answering: nothing more to wait for
            return sample_sum(samples, "tickpipe_ingest_connections") == 0

        if not wait_until(drained, timeout):
            log.warning("ingestor_not_drained", timeout_s=timeout)

    def stop(self, progress: Progress) -> None:
        if self._lock is None:
            return  # another run holds the state dir: nothing here is ours
        # The simulated exchange first: the ingestor reads every update it was sent before the close frame, so a
        # local run loses nothing at shutdown. Then the ingestor, which flushes to Kafka; then the job (stopped
        # with a savepoint, the next run resumes from it); then the engines. Live Binance cannot be stopped:
        # there the ingestor goes first and what was in flight on the socket is not read.
        for name in ("sim", "ingestor", *FLINK_JOBS):
            stage = self.stages.get(name)
            if stage and stage.exit_code() is None:
                progress(f"stopping {name}")
                if not stage.stop():
                    log.warning("stage_killed", stage=name, log=str(stage.log_path))
                if name == "sim":
                    self._wait_ingestor_drained()
            elif stage:
                stage.kill_group()
        if self.engines:
            progress(
                f"stopping the local engines this run started: {', '.join(self.engines)} (data kept in {self.home})"
            )
            self.stack.stop(self.engines)
        self.state_file.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        """Let the watchdog go (run.json is gone: it has nothing to do) and free the state dir."""
        if self._watchdog is not None and self._watchdog.stdin is not None:
            self._watchdog.stdin.close()
            try:
                self._watchdog.wait(10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
            self._watchdog = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
