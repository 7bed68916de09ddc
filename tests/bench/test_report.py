"""The benchmark report's tables from step results (no engines)."""

from __future__ import annotations

import pytest
from bench.report import Measurement, StepResult, best_round, latency_stages_section, sustained_section

pytestmark = pytest.mark.unit

NAN = float("nan")


def step(rate: float, split: dict[str, dict[str, float]]) -> StepResult:
    latency = {"p50": 30.0, "p95": 40.0, "p99": 50.0, "max": 60.0}
    return StepResult(rate, rate, 0.0, latency, stage_latency_ms=split)


def test_a_step_without_sampled_ticks_shows_dashes_not_nan() -> None:
    measured = {
        "ingestor": {"p50": 1.0, "p99": 8.0, "n": 24_050.0},
        "total": {"p50": 31.0, "p99": 155.0, "n": 24_050.0},
    }
    empty = {name: {"p50": NAN, "p99": NAN, "n": 0.0} for name in ("ingestor", "total")}
    lines = latency_stages_section([step(30_000, measured), step(60_000, empty)])
    assert "| 30,000 | off | 1 / 8 | 31 / 155 | 24,050 |" in lines
    assert "| 60,000 | off | — | — | 0 |" in lines
    assert not any("nan" in line for line in lines)


def test_a_missed_step_below_the_highest_sustained_one_is_named() -> None:
    def at(rate: float, p99: float) -> StepResult:
        return StepResult(rate, rate, 0.0, {"p50": 30.0, "p95": 40.0, "p99": p99, "max": p99})

    upsert = Measurement("postgres upsert", 1_000, 100_000.0)
    lines = sustained_section([at(30_000, 170), at(40_000, 708), at(45_000, 898), at(50_000, 277)], [upsert])
    assert lines[0].endswith("**50,000 ticks/s** (the ramp, features off).")
    assert "- as a share of postgres upsert: 50%" in lines
    assert (
        "- every step sustained up to 30,000 ticks/s; missed below the highest: "
        "40,000 (no: p99 > 500 ms, p99 708 ms), 45,000 (no: p99 > 500 ms, p99 898 ms)"
    ) in lines
    clean = sustained_section([at(30_000, 170), at(40_000, 300), at(50_000, 900)], [upsert])
    assert not any("missed" in line for line in clean)


def test_a_baseline_is_its_best_round_and_names_the_others() -> None:
    rates = (34_687.0, 61_000.4, 58_210.0)
    rounds = tuple(Measurement("postgres upsert", 200_000, rate, "steady state") for rate in rates)
    best = best_round(rounds)
    assert best.per_second == 61_000.4
    assert best.note == "steady state; best of 3 (others 34,687, 58,210)"
