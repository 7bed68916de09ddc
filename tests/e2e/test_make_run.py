"""`make run` as a newcomer runs it: it starts, shows data, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO, traversable_tmpdir
from tests.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def processes_mentioning(text: str) -> list[str]:
    """Processes whose command line or environment contains `text` (a state folder of their own)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or text in environ:
            found.append(f"{proc.name}: {cmdline[:150]}")
    return found


def test_make_run_shows_data_and_ctrl_c_leaves_no_process() -> None:
    home = traversable_tmpdir("tickpipe-make-run-")
    env = {**os.environ, "TICKPIPE_HOME": str(home)}
    for variable in [key for key in env if key.startswith(("KAFKA_", "DATABASE_", "FLINK_"))]:
        del env[variable]  # its own stack, not the test session's
    make = subprocess.Popen(
        ["make", "run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(make.stdout or []), daemon=True)
    reader.start()

    def rows_flowing() -> bool:
        for line in lines:
            if '"pipeline_status"' in line:
                status = json.loads(line)
                if status.get("newest_row_age_s") is not None and status["newest_row_age_s"] < 30:
                    return True
        return make.poll() is not None

    try:
        wait_for(rows_flowing, 420, "a status line with fresh rows from `make run`")
        assert make.poll() is None, "".join(lines[-40:])
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        make.wait(240)
        reader.join(10)
    # make itself dies of the SIGINT after its child finished (-2), as it does in a terminal; what counts is that
    # tickpipe stopped every stage in order, without a traceback.
    output = "".join(lines)
    assert make.returncode in (0, -signal.SIGINT), output[-3000:]
    assert "stopping the local engines" in output, output[-3000:]
    assert "Traceback" not in output
    assert not processes_mentioning(str(home)), processes_mentioning(str(home))
    assert (home / "logs" / "ma-job.log").exists()
    shutil.rmtree(home, ignore_errors=True)  # kept when an assertion fails, to read the logs
