"""`tickpipe sim --exchange ...` as a user starts it: a READY line with its address, a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("exchange", "prefix"), [("binance", "ws://"), ("coingecko", "http://"), ("yahoo", "ws://")])
def test_each_simulated_service_reports_ready_and_stops_on_sigterm(exchange: str, prefix: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tickpipe.cli", "sim", "--exchange", exchange, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = next(line for line in process.stdout if line.startswith("READY "))  # blocks until it is listening
        assert ready.split()[1].startswith(prefix)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
