"""Every Prometheus query in the dashboards and alert rules names metrics and labels that the stages export: the
ingestor's prometheus_client metrics, and what Flink's Prometheus reporter serves while the MA job runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.samples import Sample

from tests.conftest import TestStack
from tests.grafana.test_grafana import alert_rules, dashboards
from tests.helpers import produce, random_walk, wait_for
from tests.ma_job import test_ma_job as ma_job
from tickpipe.ingestor import metrics as ingestor_metrics
from tickpipe.ma_job.tables import job_name
from tickpipe.metrics import scrape

job = ma_job.job  # the MA job tests' fixture: a job of the parametrised engine on private topics and database
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


@dataclass(frozen=True)
class Selector:
    """One `name{label op "value", ...}` of a PromQL expression, with the labels its aggregations group by."""

    where: str
    name: str
    matchers: tuple[tuple[str, str, str], ...]
    grouping: frozenset[str]

    def matches(self, sample: Sample) -> bool:
        if sample.name != self.name:
            return False
        for label, op, value in self.matchers:
            actual = sample.labels.get(label, "")
            hit = re.fullmatch(value, actual) is not None if "~" in op else actual == value
            if hit == op.startswith("!"):
                return False
        return True


def selectors(where: str, expr: str) -> Iterator[Selector]:
    grouping = frozenset(
        label.strip()
        for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
        for label in labels.split(",")
        if label.strip()
    )
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    bare = re.sub(r"\[[^\]]*\]", " ", bare)  # range durations
    for found in re.finditer(r"([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?(\s*\()?", bare):
        name, braces, call = found.groups()
        if call or name in KEYWORDS:
            continue  # a function or an aggregation, not a metric
        matchers = tuple(re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', braces or ""))
        yield Selector(where, name, matchers, grouping)


def prometheus_selectors() -> list[Selector]:
    found = []
    for board_name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "expr" in target:
                    where = f"{board_name}: {panel['title']} ({target['refId']})"
                    found += selectors(where, target["expr"])
    for rule in alert_rules():
        for query in rule["data"]:
            if "expr" in query["model"]:
                found += selectors(f"alert {rule['uid']}", query["model"]["expr"])
    return found


def ingestor_exports() -> dict[str, set[str]]:
    """Sample name -> label names of the ingestor's metrics, as prometheus_client exposes them."""
    exported: dict[str, set[str]] = {}
    for metric in vars(ingestor_metrics).values():
        if isinstance(metric, MetricWrapperBase):
            family = metric.describe()[0]
            labels = set(metric._labelnames)  # prometheus_client keeps them only there
            for suffix in SUFFIXES[family.type]:
                exported[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return exported


@pytest.mark.unit
def test_the_dashboards_query_the_ingestor_metrics_by_their_exported_names_and_labels() -> None:
    exported = ingestor_exports()
    queried = [s for s in prometheus_selectors() if s.name.startswith("tickpipe_")]
    assert {s.name for s in queried} >= {
        "tickpipe_ingest_messages_total",
        "tickpipe_ingest_dlq_total",
        "tickpipe_ingest_reconnects_total",
        "tickpipe_ingest_gaps_total",
    }
    for selector in queried:
        assert selector.name in exported, f"{selector.where}: {selector.name} is not exported by the ingestor"
        labels = {label for label, _, _ in selector.matchers} | selector.grouping
        assert labels <= exported[selector.name], f"{selector.where}: {selector.name} has no {labels}"


@pytest.mark.unit
def test_every_queried_metric_belongs_to_a_stage() -> None:
    for selector in prometheus_selectors():
        assert selector.name.startswith(("tickpipe_ingest_", "flink_taskmanager_job_task_", "flink_jobmanager_job_")), (
            selector
        )


def flink_samples(stack: TestStack) -> list[Sample]:
    """Every sample the Flink cluster's Prometheus reporters serve (JobManager and TaskManager ports)."""
    port = stack.local.ports("flink")["metrics"]
    return [
        sample for metrics_port in (port, port + 1) for sample in scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    ]


def total(samples: list[Sample], selector: Selector, job_name: str) -> float:
    return sum(s.value for s in samples if selector.matches(s) and s.labels.get("job_name") == job_name)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("job", ["sql", "keyed"], indirect=True)
def test_the_flink_metrics_in_the_dashboards_are_served_by_a_running_ma_job(
    job: ma_job.JobUnderTest, flink: TestStack
) -> None:
    ticks = random_walk(["BTCUSDT", "ETHUSDT"], 30)
    bad = [("X", b"not json"), ("BTCUSDT", ticks[0].to_json())]  # unparseable, and a stale re-send
    produce(job.settings, ma_job.keyed(ticks[:30]) + bad + ma_job.keyed(ticks[30:]))
    job.submit_detached()
    job.wait_for_rows(len(ticks), f"{len(ticks)} rows in price_ticks")
    flink_job = re.sub(r"[^\w:]", "_", job_name(job.settings))  # the reporter's spelling of label values
    queried = [s for s in prometheus_selectors() if s.name.startswith("flink_")]
    assert queried, "no Flink metric in the dashboards"

    dead_letters = next(s for s in queried if "dead_letters" in str(s.matchers))
    rows_written = next(s for s in queried if "price_ticks" in str(s.matchers))

    def served() -> list[Sample]:
        samples = flink_samples(flink)
        return samples if total(samples, dead_letters, flink_job) >= len(bad) else []

    samples = wait_for(served, 60, "the ma-job's dead letters in Flink's metrics")
    for selector in queried:
        hits = [s for s in samples if selector.matches(s) and s.labels.get("job_name") == flink_job]
        assert hits, f"{selector.where}: no series {selector.name}{dict((m[0], m[2]) for m in selector.matchers)}"
        assert selector.grouping <= set(hits[0].labels) | {"le"}, f"{selector.where}: {selector.grouping}"
    # The panels count what they say: every dead letter of the job (either engine), and every row it wrote.
    assert total(samples, dead_letters, flink_job) == len(bad)
    assert total(samples, rows_written, flink_job) == len(ticks)
