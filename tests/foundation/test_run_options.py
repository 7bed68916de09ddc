"""`tickpipe run --no-candles`: the run starts the MA job, no candle job, and an ingestor without klines (the
benchmark's "features off").

The stages are recorded instead of started, and the engines' steps (broker wait, topics, migrations) are skipped:
what is tested is which stages `LocalPipeline.start` starts for the options the command line gives.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tickpipe.cli import build_parser
from tickpipe.config import load_settings
from tickpipe.run import cli as run_cli
from tickpipe.run import pipeline as run_pipeline
from tickpipe.run.pipeline import LocalPipeline


class RecordedStage:
    def __init__(self, name: str, args: list[str]) -> None:
        self.name, self.args = name, args

    def check_alive(self) -> None:
        pass


def started_stages(argv: list[str], home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """`tickpipe run <argv>`'s stages (name → arguments) as LocalPipeline.start starts them."""
    parser = build_parser({"run": run_cli})
    args = parser.parse_args(["run", *argv])
    # An exchange already running: no simulator is started either.
    options = replace(run_cli.run_options(args, load_settings()), exchange_url="ws://127.0.0.1:9")
    pipeline = LocalPipeline(load_settings(), home, options)
    started: dict[str, list[str]] = {}

    def stage(name: str, args: list[str], **kwargs: object) -> RecordedStage:
        # The arguments, then the environment the stage gets (its upper-case keyword arguments).
        started[name] = [*args, *(f"{key}={value}" for key, value in kwargs.items() if key.isupper())]
        return RecordedStage(name, args)

    for name in ("wait_for_broker", "ensure_topics", "migrate"):
        monkeypatch.setattr(run_pipeline, name, lambda *a, **k: None)
    monkeypatch.setattr(pipeline, "_claim", lambda progress: None)
    monkeypatch.setattr(pipeline, "_stage", stage)
    pipeline.start(lambda message: None)
    return started


@pytest.mark.unit
def test_no_candles_starts_the_ma_job_and_no_candle_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange = ["--external", "--symbols", "btcusdt"]
    default = started_stages(exchange, tmp_path / "default", monkeypatch)
    assert list(default) == ["ingestor", "ma-job", "candle-job"]
    assert default["candle-job"] == ["ma-job", "--candles", "--resume-if-possible"]

    without = started_stages([*exchange, "--no-candles"], tmp_path / "without", monkeypatch)
    assert list(without) == ["ingestor", "ma-job"]
    assert without["ma-job"] == default["ma-job"]
    # Nobody stores klines without the candle job: the ingestor streams none.
    assert "INGEST_KLINES=false" in without["ingestor"]
    assert "INGEST_KLINES=true" in default["ingestor"]
