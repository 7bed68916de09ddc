"""The whole pipeline on one machine: local engines, schema, simulated exchange (or Binance), ingestor, MA job.

`start()` brings it up in dependency order and fails with one message naming the stage and its log;
`stop()` takes it down in the order that loses nothing: the simulator first (the ingestor reads to the end of
its connections), then the ingestor (it flushes to Kafka), the MA job (stopped with a savepoint the next run
resumes from) and the engines.
What is running is written to `$TICKPIPE_HOME/run.json`, so `tickpipe top` in another terminal finds it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from tickpipe.config import Settings, load_settings
from tickpipe.errors import StackError
from tickpipe.kafka import ensure_topics, wait_for_broker
from tickpipe.logs import get_logger
from tickpipe.metrics import sample_sum, scrape
from tickpipe.migrator.migrate import migrate
from tickpipe.run.stages import StageProcess
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.process import free_port, wait_until

log = get_logger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunOptions:
    source: str = "sim"  # "sim" or "binance"
    symbols: tuple[str, ...] = ()
    seed: int = 42
    rate: float = 1.0  # updates per second per symbol, as Binance's @ticker stream
    external: bool = False  # use the Kafka/PostgreSQL/Flink given by env instead of starting the local stack
    record: Path | None = None  # where the simulator records every tick it sends (end-to-end checks)
    max_ticks: int | None = None  # the simulator stops publishing after this many updates


class BinanceUnreachable(StackError):
    pass


def check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fail fast, before starting anything, when the exchange's host cannot be reached (DNS + TCP)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as error:
        reason = error.strerror or type(error).__name__
    raise BinanceUnreachable(
        f"cannot reach Binance at {url} (tried DNS + TCP to {host}:{port} within {timeout:.0f} s: {reason}). "
        "No network? Run offline on the simulated exchange: `make run` (or `tickpipe run --source sim`)."
    )


@dataclass
class LocalPipeline:
    settings: Settings
    home: Path
    options: RunOptions
    stages: dict[str, StageProcess] = field(default_factory=dict)
    metrics_urls: dict[str, str] = field(default_factory=dict)
    started_stack: bool = False

    @property
    def state_file(self) -> Path:
        return self.home / "run.json"

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.options.symbols or self.settings.symbols

    def start(self, progress: Progress) -> Settings:
        if self.options.source == "binance":
            progress(f"checking that Binance is reachable at {self.settings.binance_ws_url}")
            check_reachable(self.settings.binance_ws_url)
        if not self.options.external:
            progress("starting the local engines (Kafka KRaft, PostgreSQL, Flink)")
            stack = LocalStack(self.home, self.settings.jars_dir.resolve())
            exports = stack.up()
            self.started_stack = True
            os.environ.update(exports)
            self.settings = load_settings()
        progress(f"waiting for Kafka at {self.settings.kafka_bootstrap_servers}")
        wait_for_broker(self.settings.kafka_bootstrap_servers, timeout=60)
        ensure_topics(self.settings)
        progress("applying the schema (tickpipe migrate)")
        migrate(self.settings)

        ws_url = self.settings.binance_ws_url
        if self.options.source == "sim":
            progress(f"starting the simulated exchange ({len(self.symbols)} symbols)")
            sim = self._stage(
                "sim",
                [
                    "sim",
                    "--port",
                    "0",
                    "--symbols",
                    ",".join(self.symbols),
                    "--seed",
                    str(self.options.seed),
                    "--rate",
                    str(self.options.rate),
                    *(["--record", str(self.options.record)] if self.options.record else []),
                    *(["--max-ticks", str(self.options.max_ticks)] if self.options.max_ticks else []),
                ],
            )
            ws_url = sim.wait_for_line("READY ", timeout=30).split()[1]
        progress("starting the ingestor")
        ingest_port = free_port()
        ingestor = self._stage(
            "ingestor",
            ["ingest", "--symbols", ",".join(self.symbols)],
            BINANCE_WS_URL=ws_url,
            METRICS_PORT=str(ingest_port),
        )
        self.metrics_urls["ingestor"] = f"http://127.0.0.1:{ingest_port}"
        progress("starting the MA job on Flink (resuming from the last checkpoint if there is one)")
        self._stage("ma-job", ["ma-job", "--resume-if-possible"], stop_signal=signal.SIGINT)
        ingestor.check_alive()
        self._write_state(ws_url)
        return self.settings

    def _stage(
        self, name: str, args: list[str], *, stop_signal: signal.Signals = signal.SIGTERM, **env: str
    ) -> StageProcess:
        stage = StageProcess(
            name,
            args,
            self.home / "logs" / f"{name}.log",
            env={**os.environ, "LOG_FORMAT": "json", **env},
            stop_signal=stop_signal,
        ).start()
        self.stages[name] = stage
        return stage

    def _write_state(self, ws_url: str) -> None:
        state = {
            "source": self.options.source,
            "exchange_url": ws_url,
            "symbols": list(self.symbols),
            "stages": {
                name: {"pid": stage.pid, "log": str(stage.log_path), "metrics_url": self.metrics_urls.get(name)}
                for name, stage in self.stages.items()
            },
        }
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))

    def check(self) -> None:
        """Raise StackError naming the first stage that exited."""
        for stage in self.stages.values():
            stage.check_alive()

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
        # The simulated exchange first: the ingestor reads every update it was sent before the close frame, so a
        # local run loses nothing at shutdown. Then the ingestor, which flushes to Kafka; then the job (stopped
        # with a savepoint, the next run resumes from it); then the engines. Live Binance cannot be stopped:
        # there the ingestor goes first and what was in flight on the socket is not read.
        for name in ("sim", "ingestor", "ma-job"):
            stage = self.stages.get(name)
            if stage and stage.exit_code() is None:
                progress(f"stopping {name}")
                if not stage.stop():
                    log.warning("stage_killed", stage=name, log=str(stage.log_path))
                if name == "sim":
                    self._wait_ingestor_drained()
        self.state_file.unlink(missing_ok=True)
        if self.started_stack:
            progress("stopping the local engines (data kept in " + str(self.home) + ")")
            LocalStack(self.home, self.settings.jars_dir.resolve()).down()
