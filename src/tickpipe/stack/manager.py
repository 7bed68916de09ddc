"""`tickpipe stack up|down|status`: the local engines as processes, with their state under one folder.

Layout of the state folder ($TICKPIPE_HOME, default ./.tickpipe, git-ignored; `make clean` removes it):
    stack.json   ports and pids of the running engines        stack.env  variables that point stages at them
    logs/        one log per process                          kafka/ postgres/ flink/  data, config, checkpoints
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickpipe.errors import StackError
from tickpipe.stack.components import Component, FlinkCluster, KafkaBroker, Postgres
from tickpipe.stack.process import (
    cmdline_contains,
    free_port,
    kill_group,
    pid_alive,
    port_is_free,
    same_process,
    spawn,
    start_time,
    stop_pid,
)
from tickpipe.stack.sizing import AUTO, EngineSizes

COMPONENTS = ("kafka", "postgres", "flink")
# How each engine wants to be stopped: Kafka and Flink shut down cleanly on SIGTERM; PostgreSQL's "fast"
# shutdown (SIGINT) rolls back open transactions and checkpoints, where SIGTERM would wait for clients.
STOP_SIGNALS = {"postgres": signal.SIGINT}


@dataclass(frozen=True)
class ProcessStatus:
    component: str
    process: str
    pid: int | None
    running: bool
    log: Path


class LocalStack:
    """The engines of one state dir. With `tied_to_caller` (what `tickpipe run` uses) every engine it starts gets
    its stop signal when the calling process dies, however it dies; `started` lists the engines this object
    started, so a run stops only those and leaves a stack that `tickpipe stack up` brought up running."""

    def __init__(
        self,
        home: Path,
        jars_dir: Path,
        *,
        tied_to_caller: bool = False,
        tls: bool | None = None,
        sizes: EngineSizes | None = None,
        flink_taskmanagers: int | None = None,
        kafka_nodes: int | None = None,
    ) -> None:
        self.home, self.jars_dir, self.tied_to_caller = home, jars_dir, tied_to_caller
        # The memory limits of the engines this object starts (tickpipe.stack.sizing): given, or STACK_MEMORY, where
        # `auto` is `large` (the load is not known here). An engine that runs keeps the ones it was started with,
        # recorded in stack.json, also when one of its processes is restarted.
        try:
            self.sizes = sizes or EngineSizes.named(os.environ.get("STACK_MEMORY", AUTO))
        except ValueError as error:
            raise StackError(f"invalid STACK_MEMORY: {error}") from None
        # TLS + SCRAM engines (tickpipe.stack.tls): asked for here or by TICKPIPE_STACK_TLS=1, then kept in
        # stack.json, because a state dir's broker storage and certificates are made for one mode.
        self.tls_requested = tls if tls is not None else os.environ.get("TICKPIPE_STACK_TLS") == "1"
        # Flink TaskManagers (STACK_FLINK_TASKMANAGERS): one with 4 slots, or several with 2 slots each, so that a
        # job at parallelism > 1 spans processes and losing one TaskManager can be tried locally.
        self.flink_taskmanagers = flink_taskmanagers or _count_setting("STACK_FLINK_TASKMANAGERS", 8)
        # Kafka nodes (STACK_KAFKA_NODES): 1, or 3 with replication factor 3 and min.insync.replicas 2.
        self.kafka_nodes = kafka_nodes or _count_setting("STACK_KAFKA_NODES", 5)
        self.state_file, self.env_file, self.log_dir = home / "stack.json", home / "stack.env", home / "logs"
        self.started: list[str] = []

    # -- state -------------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {"components": {}}
        return state

    def _save(self, state: dict[str, Any]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2))

    def _write_env(self, components: list[Component]) -> dict[str, str]:
        exports: dict[str, str] = {}
        for component in components:
            exports.update(component.exports())
        # Holds generated local passwords: readable by the owner only.
        self.env_file.touch(mode=0o600)
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in exports.items()))
        return exports

    @property
    def tls(self) -> bool:
        return self.tls_requested or bool(self._load().get("tls"))

    def _component(self, name: str, ports: dict[str, int], memory: str | None = None) -> Component:
        home, logs = self.home / name, self.log_dir
        sizes = EngineSizes.named(memory) if memory else self.sizes
        recorded = (self._load()["components"].get(name) or {}).get("taskmanagers" if name == "flink" else "nodes")
        if name == "kafka":
            return KafkaBroker(
                home,
                logs,
                ports,
                self.jars_dir / "kafka-broker",
                tls=self.tls,
                sizes=sizes,
                nodes=int(recorded or self.kafka_nodes),
            )
        if name == "postgres":
            return Postgres(home, logs, ports, tls=self.tls, sizes=sizes)
        if name == "flink":
            return FlinkCluster(
                home,
                logs,
                ports,
                sizes=sizes,
                taskmanagers=int(recorded or self.flink_taskmanagers),
                connector_jars=self.jars_dir / "flink-connectors",
            )
        raise StackError(f"unknown stack component {name!r} (expected one of {', '.join(COMPONENTS)})")

    def _choose_ports(self, name: str, previous: dict[str, int], fixed: bool) -> dict[str, int]:
        roles = self._component(name, {}).port_roles
        defaults = self._component(name, {}).fixed_ports
        ports: dict[str, int] = {}
        for role in roles:
            if fixed:
                port = defaults[role]
                if not port_is_free(port):
                    raise StackError(
                        f"{name}: port {port} ({role}) is already in use; free it, "
                        f"or start without --fixed-ports to use free ports"
                    )
            elif role in previous and port_is_free(previous[role]):
                port = previous[role]  # same address as last run, so clients configured then still work
            else:
                port = free_port()
            ports[role] = port
        if name == "flink" and not fixed:
            ports["metrics"] = _free_port_pair()
        return ports

    # -- commands ----------------------------------------------------------------------------------------------
    def up(
        self, only: tuple[str, ...] = COMPONENTS, *, fixed_ports: bool = False, timeout: float = 120.0
    ) -> dict[str, str]:
        """Start the named engines (already running ones are kept), wait until each is ready, return exports."""
        state = self._load()
        if self.tls_requested and not state.get("tls"):
            state["tls"] = True
            self._save(state)
        started: list[str] = []
        components: list[Component] = []
        try:
            for name in only:
                entry = state["components"].get(name, {})
                if entry and self._running(name, entry):
                    components.append(self._component(name, {k: int(v) for k, v in entry["ports"].items()}))
                    continue
                if entry and self._alive(entry):
                    # Part of it still runs (a Flink TaskManager died, its JobManager did not): start the missing
                    # processes on the same ports, never a second copy of the live ones.
                    for process in self.dead_processes(name):
                        self.restart_process(name, process)
                    state = self._load()
                    components.append(self._component(name, self.ports(name)))
                    continue
                ports = self._choose_ports(name, entry.get("ports", {}), fixed_ports)
                component = self._component(name, ports)
                component.prepare()
                pids = {
                    process: self._spawn(component, process, argv) for process, argv in component.commands().items()
                }
                state["components"][name] = {
                    "ports": ports,
                    "pids": pids,
                    "started": self._started_times(pids),
                    "memory": self.sizes.label,
                    **({"taskmanagers": self.flink_taskmanagers} if name == "flink" else {}),
                    **({"nodes": self.kafka_nodes} if name == "kafka" else {}),
                }
                self._save(state)
                started.append(name)
                components.append(component)
            with ThreadPoolExecutor(max_workers=len(components) or 1) as pool:
                list(pool.map(lambda c: self._wait_ready(c, state, timeout), components))
        except BaseException:
            self._stop(started)
            raise
        self.started.extend(started)
        return self._write_env(components)

    def _spawn(self, component: Component, process: str, argv: list[str]) -> int:
        return spawn(
            argv,
            log_path=self.log_dir / f"{process}.log",
            env=component.process_env(),
            run_as=component.run_as,
            cwd=component.home,
            tied_to_parent=STOP_SIGNALS.get(component.name, signal.SIGTERM) if self.tied_to_caller else None,
        )

    @staticmethod
    def _started_times(pids: dict[str, int]) -> dict[str, int | None]:
        return {process: start_time(pid) for process, pid in pids.items()}

    def _ours(self, entry: dict[str, Any], process: str) -> bool:
        """Is the recorded process still running? Its start time (recorded at spawn) guards against a recycled
        pid; state from before start times were recorded falls back to the command line naming the state dir (a
        process that is still a start-up script, such as Flink's, does not name it yet)."""
        pid = entry["pids"][process]
        started = self._started(entry, process)
        if started is not None:
            return same_process(pid, started)
        return pid_alive(pid) and cmdline_contains(pid, str(self.home))

    @staticmethod
    def _started(entry: dict[str, Any], process: str) -> int | None:
        """The process's start time recorded at spawn (None in state from before start times were recorded)."""
        started = (entry.get("started") or {}).get(process)
        return int(started) if started is not None else None

    def _alive(self, entry: dict[str, Any]) -> bool:
        return any(self._ours(entry, process) for process in entry.get("pids") or {})

    def running(self, names: tuple[str, ...] = COMPONENTS) -> dict[str, int]:
        """Process name → pid of the named engines' processes that still run."""
        components = self._load()["components"]
        return {
            process: pid
            for name in names
            for process, pid in (components.get(name) or {}).get("pids", {}).items()
            if self._ours(components[name], process)
        }

    def dead_processes(self, name: str) -> list[str]:
        """The processes of a started engine that are no longer running (empty when it was never started)."""
        entry = self._load()["components"].get(name) or {}
        return [process for process in entry.get("pids") or {} if not self._ours(entry, process)]

    def restart_process(self, name: str, process: str) -> int:
        """Start one process of an engine again, on the engine's recorded ports; return its pid (readiness is the
        caller's to wait for)."""
        state = self._load()
        entry = state["components"][name]
        started = self._started(entry, process)
        if started is not None:  # a killed TaskManager's UDF workers outlive it in its group, which no stop signals
            kill_group(entry["pids"][process], started)
        component = self._component(name, {k: int(v) for k, v in entry["ports"].items()}, entry.get("memory"))
        pid = self._spawn(component, process, component.commands()[process])
        entry["pids"][process] = pid
        entry.setdefault("started", {})[process] = start_time(pid)
        self._save(state)
        return pid

    def pids(self, names: tuple[str, ...] = COMPONENTS) -> dict[str, int]:
        """Process name → pid of the named engines' recorded processes."""
        components = self._load()["components"]
        return {process: pid for name in names for process, pid in (components.get(name) or {}).get("pids", {}).items()}

    def _wait_ready(self, component: Component, state: dict[str, Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pids: dict[str, int] = state["components"][component.name]["pids"]
        while True:
            dead = [process for process, pid in pids.items() if not pid_alive(pid)]
            if dead:
                raise component.not_ready(f"process {dead[0]} exited during start-up")
            try:
                component.check_ready()
                return
            except StackError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.3)

    def _running(self, name: str, entry: dict[str, Any]) -> bool:
        pids = entry.get("pids") or {}
        return bool(pids) and all(self._ours(entry, process) for process in pids)

    def down(self) -> list[str]:
        """Stop every engine this state folder started; return the names of processes that had to be killed."""
        return self._stop(list(self._load()["components"]))

    def stop(self, names: list[str]) -> list[str]:
        """Stop the named engines only (what a run started); return the processes that had to be killed."""
        return self._stop(names)

    def _stop(self, names: list[str]) -> list[str]:
        state = self._load()
        killed: list[str] = []
        # TaskManagers and brokers first, so the JobManager/controller sees a clean goodbye.
        for name in names:
            entry = state["components"].get(name)
            if not entry:
                continue
            for process, pid in reversed(list(entry["pids"].items())):
                started = self._started(entry, process)
                if self._ours(entry, process):
                    if stop_pid(pid, sig=STOP_SIGNALS.get(name, signal.SIGTERM), started=started):
                        killed.append(process)
                elif started is not None:
                    kill_group(pid, started)  # its leader crashed: what it left in its group (a UDF worker)
            entry["pids"] = {}
            entry.pop("started", None)
        self._save(state)
        if not any(entry.get("pids") for entry in state["components"].values()):
            self.env_file.unlink(missing_ok=True)
        return killed

    def status(self) -> list[ProcessStatus]:
        state = self._load()
        rows = []
        for name in COMPONENTS:
            entry = state["components"].get(name)
            if not entry or not entry.get("pids"):
                rows.append(ProcessStatus(name, name, None, False, self.log_dir))
                continue
            for process, pid in entry["pids"].items():
                running = self._ours(entry, process)
                rows.append(ProcessStatus(name, process, pid, running, self.log_dir / f"{process}.log"))
        return rows

    def memory(self, name: str) -> str | None:
        """The STACK_MEMORY sizes an engine was started with (tickpipe.stack.sizing); None if never started."""
        memory = (self._load()["components"].get(name) or {}).get("memory")
        return str(memory) if memory else None

    def ports(self, name: str) -> dict[str, int]:
        return {k: int(v) for k, v in self._load()["components"].get(name, {}).get("ports", {}).items()}

    def kill_process(self, name: str, process: str) -> None:
        """Hard-kill one process of a component, e.g. one Flink TaskManager (tests: losing a node)."""
        pid = self._load()["components"][name]["pids"][process]
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)

    def kill(self, name: str) -> None:
        """Hard-kill a component's processes (tests use it to simulate a crash)."""
        for pid in self._load()["components"].get(name, {}).get("pids", {}).values():
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)


def _count_setting(name: str, most: int) -> int:
    value = os.environ.get(name, "1").strip()
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise StackError(f"invalid {name}: expected 1 to {most}, got {value!r}")
    return int(value)


def _free_port_pair() -> int:
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise StackError("could not find two consecutive free ports for Flink's Prometheus reporters")
