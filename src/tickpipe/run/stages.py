"""The pipeline's stage processes as `make run` starts them: `tickpipe <stage> ...` children with a log file each."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tickpipe.errors import StackError
from tickpipe.stack.process import die_with_parent, start_time, tail, wait_until
from tickpipe.stack.process import kill_group as kill_process_group


@dataclass
class StageProcess:
    """One `tickpipe <command>` child. Its own session, so the terminal's Ctrl-C reaches only the orchestrator,
    which then stops the stages in a safe order (ingestor flush first). With `tied_to_parent` it gets its stop
    signal from the kernel if the orchestrator dies without stopping it (PR_SET_PDEATHSIG), and `marker`
    (`-X tickpipe_home=<state dir>`, which Python ignores) names it on its command line, so leftovers of a crashed
    run can be found."""

    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    stop_signal: signal.Signals = signal.SIGTERM
    marker: str | None = None
    # Tie the stage to the life of the thread that starts it (PR_SET_PDEATHSIG): `tickpipe run` does, from its main
    # thread; off by default, since a stage started from a short-lived thread would be stopped when that thread ends.
    tied_to_parent: bool = False
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # the log is appended to across runs: this run's lines start here
    started: int | None = None  # the process's start time (with the pid, names it for good)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, *(["-X", self.marker] if self.marker else []), "-m", "tickpipe.cli", *self.args]

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> StageProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=die_with_parent(self.stop_signal) if self.tied_to_parent else None,  # noqa: PLW1509
            )
        self.started = start_time(self.process.pid)
        return self

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process else None

    def check_alive(self) -> None:
        code = self.exit_code()
        if code is not None:
            raise StackError(
                f"{self.name} exited with code {code}; last lines of {self.log_path}:\n{tail(self.log_path)}"
            )

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        """Wait until the stage writes a line starting with `prefix` to its log; return the line."""
        found: list[str] = []

        def seen() -> bool:
            self.check_alive()
            with contextlib.suppress(FileNotFoundError), self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                for line in log.read().decode(errors="replace").splitlines():
                    if line.startswith(prefix):
                        found.append(line)
                        return True
            return False

        if not wait_until(seen, timeout, interval=0.1):
            raise StackError(f"{self.name} did not report {prefix!r} within {timeout:.0f} s; see {self.log_path}")
        return found[0]

    def kill_group(self) -> None:
        """SIGKILL what is left of the stage's process group: its children outlive a leader that was killed."""
        if self.process is not None:
            kill_process_group(self.process.pid, self.started)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def stop(self, timeout: float = 60.0) -> bool:
        """Ask the stage to stop, wait for it; kill its group at the deadline. Return True if it stopped cleanly."""
        if self.process is None or self.process.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, self.stop_signal)
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            return False
        finally:
            # The stage's own children (Python UDF workers, a Flink client) share its process group.
            pgid = self.process.pid
            if not wait_until(lambda: not _group_alive(pgid), 5.0):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
