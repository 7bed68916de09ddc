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
from tickpipe.stack.process import cmdline_contains, free_port, pid_alive, port_is_free, spawn, stop_pid

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
    def __init__(self, home: Path, jars_dir: Path) -> None:
        self.home, self.jars_dir = home, jars_dir
        self.state_file, self.env_file, self.log_dir = home / "stack.json", home / "stack.env", home / "logs"

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

    def _component(self, name: str, ports: dict[str, int]) -> Component:
        home, logs = self.home / name, self.log_dir
        if name == "kafka":
            return KafkaBroker(home, logs, ports, self.jars_dir / "kafka-broker")
        if name == "postgres":
            return Postgres(home, logs, ports)
        if name == "flink":
            return FlinkCluster(home, logs, ports)
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
        started: list[str] = []
        components: list[Component] = []
        try:
            for name in only:
                entry = state["components"].get(name, {})
                if entry and self._running(name, entry):
                    components.append(self._component(name, {k: int(v) for k, v in entry["ports"].items()}))
                    continue
                ports = self._choose_ports(name, entry.get("ports", {}), fixed_ports)
                component = self._component(name, ports)
                component.prepare()
                pids = {
                    process: spawn(
                        argv,
                        log_path=self.log_dir / f"{process}.log",
                        env=component.process_env(),
                        run_as=component.run_as,
                        cwd=component.home,
                    )
                    for process, argv in component.commands().items()
                }
                state["components"][name] = {"ports": ports, "pids": pids}
                self._save(state)
                started.append(name)
                components.append(component)
            with ThreadPoolExecutor(max_workers=len(components) or 1) as pool:
                list(pool.map(lambda c: self._wait_ready(c, state, timeout), components))
        except BaseException:
            self._stop(started)
            raise
        return self._write_env(components)

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
        return bool(pids) and all(pid_alive(pid) and cmdline_contains(pid, str(self.home)) for pid in pids.values())

    def down(self) -> list[str]:
        """Stop every engine this state folder started; return the names of processes that had to be killed."""
        return self._stop(list(self._load()["components"]))

    def _stop(self, names: list[str]) -> list[str]:
        state = self._load()
        killed: list[str] = []
        # TaskManagers and brokers first, so the JobManager/controller sees a clean goodbye.
        for name in names:
            entry = state["components"].get(name)
            if not entry:
                continue
            for process, pid in reversed(list(entry["pids"].items())):
                if (
                    pid_alive(pid)
                    and cmdline_contains(pid, str(self.home))
                    and stop_pid(pid, sig=STOP_SIGNALS.get(name, signal.SIGTERM))
                ):
                    killed.append(process)
            entry["pids"] = {}
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
                running = pid_alive(pid) and cmdline_contains(pid, str(self.home))
                rows.append(ProcessStatus(name, process, pid, running, self.log_dir / f"{process}.log"))
        return rows

    def ports(self, name: str) -> dict[str, int]:
        return {k: int(v) for k, v in self._load()["components"].get(name, {}).get("ports", {}).items()}

    def kill(self, name: str) -> None:
        """Hard-kill a component's processes (tests use it to simulate a crash)."""
        for pid in self._load()["components"].get(name, {}).get("pids", {}).values():
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)


def _free_port_pair() -> int:
    for _ in range(50):
        port = free_port()
        if port < 65535 and port_is_free(port + 1):
            return port
    raise StackError("could not find two consecutive free ports for Flink's Prometheus reporters")
