"""The run's watchdog: when `tickpipe run` dies without stopping (SIGKILL, OOM killer), stop what it started.

`tickpipe run` starts it first, in a session of its own (a signal to the run's process group does not reach it),
with a pipe on stdin whose other end only the run holds: end of file means the run is gone, however it went. If
the run stopped cleanly it removed run.json and there is nothing to do. Otherwise the stages and engines the run
started directly already got their stop signal from the kernel (PR_SET_PDEATHSIG); the watchdog waits for them and
kills what is left, their own children included (a Flink client, UDF workers), which the kernel does not signal.

    python -X tickpipe_home=<state dir> -m tickpipe.run.watchdog <state dir> <run pid>
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from tickpipe.logs import configure_logging, get_logger
from tickpipe.run.leftovers import read_state, stop_leftovers

log = get_logger("tickpipe.run.watchdog")


def main(argv: list[str]) -> int:
    home, run_pid = Path(argv[0]), int(argv[1])
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # a closed terminal or Ctrl-C is for the run, which stops cleanly
    configure_logging()
    while sys.stdin.buffer.read(4096):
        pass  # nothing is ever written: only the end of file matters
    state = read_state(home)
    if state.get("pid") != run_pid:
        return 0  # the run stopped cleanly (or another run owns the state dir now)
    log.warning("run_died", pid=run_pid, home=str(home))
    stopped = stop_leftovers(home, state, signal_stages=False)
    if read_state(home).get("pid") == run_pid:  # not a newer run's
        (home / "run.json").unlink(missing_ok=True)
    log.warning("run_leftovers_stopped", pid=run_pid, stopped=stopped)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
