"""The TimescaleDB test engine: PGlite with the timescaledb extension (WebAssembly, from npm) on a TCP port.

It is not a server to run the pipeline on (one connection at a time, in memory); it exists so that the
TimescaleDB-only SQL (hypertables, compression and retention policies, time_bucket) is executed by the real
extension in tests, on a machine without Docker. `make setup` installs it into setup/timescaledb/node_modules.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from tickpipe.errors import StackError
from tickpipe.stack.process import free_port, tail, wait_until

ENGINE_DIR = Path(__file__).resolve().parents[3] / "setup" / "timescaledb"
# PGlite accepts any password; libpq insists on sending one when the server asks.
USER, PASSWORD, DATABASE = "postgres", "postgres", "postgres"


def engine_installed(engine_dir: Path = ENGINE_DIR) -> bool:
    return (engine_dir / "node_modules" / "@electric-sql" / "pglite-socket").is_dir()


class TimescaleEngine:
    def __init__(self, log_path: Path, engine_dir: Path = ENGINE_DIR, start_timeout: float = 60.0) -> None:
        self.log_path, self.engine_dir, self.start_timeout = log_path, engine_dir, start_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """For DATABASE_URL (the password goes to DATABASE_PASSWORD)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}?sslmode=disable"  # PGlite speaks no TLS

    def conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={DATABASE} user={USER} password={PASSWORD} sslmode=disable"

    def start(self) -> TimescaleEngine:
        node = shutil.which("node")
        if node is None:
            raise StackError("timescaledb engine: node not found (make setup installs Node.js)")
        if not engine_installed(self.engine_dir):
            raise StackError(f"timescaledb engine: not installed in {self.engine_dir}; run `make setup`")
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            process = self._process = subprocess.Popen(
                [node, "server.mjs", "--port", str(self.port)],
                cwd=self.engine_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        ready = wait_until(self._ready, self.start_timeout, interval=0.2)
        # _ready also ends the wait when the process exits, so a crash is reported now rather than as a refused
        # connection later.
        code = process.poll()
        if not ready or code is not None:
            self.stop()
            why = f"exited with code {code}" if code is not None else f"not ready within {self.start_timeout:.0f} s"
            raise StackError(f"timescaledb engine {why}; last lines of {self.log_path}:\n{tail(self.log_path, 20)}")
        return self

    def _ready(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            return True  # exited: stop waiting, start() reports it
        return "READY " in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(10)

    def __enter__(self) -> TimescaleEngine:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
