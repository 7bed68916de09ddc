"""`tickpipe k8s status` against recorded Kubernetes API responses.

No API server can run here, so a small local HTTP server answers the API paths with recorded responses
(tests/tools/fixtures/k8s/*.json) and the real `kubernetes` client reaches it through a kubeconfig, as it would
reach kind: credentials, URL building, HTTP and JSON parsing are the client's own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tickpipe.cli import main

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
TOKEN = "recorded-fixture-token"
NOT_FOUND = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "code": 404,
    "reason": "NotFound",
    "message": "the server could not find the requested resource",
}


class RecordedApiServer(ThreadingHTTPServer):
    """Answers GET <path> with the recorded response; unknown paths get the API server's 404 Status."""

    daemon_threads = True

    def __init__(self, responses: dict[str, Any]) -> None:
        self.responses = responses
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)
        super().__init__(("127.0.0.1", 0), RecordedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class RecordedHandler(BaseHTTPRequestHandler):
    server: RecordedApiServer

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path).rstrip("/")
        self.server.requests.append((path, self.headers.get("Authorization")))
        recorded = self.server.responses.get(path)
        if recorded is None:
            status, body = 404, NOT_FOUND
        else:
            status, body = recorded["status"], recorded["body"]
        # A text body is a proxied scrape (Prometheus text); everything else is the API server's JSON.
        text = isinstance(body, str)
        payload = body.encode() if text else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4" if text else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def write_kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "recorded", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": TOKEN}}],
        "contexts": [
            {"name": "recorded", "context": {"cluster": "recorded", "user": "tester", "namespace": "tickpipe"}}
        ],
        "current-context": "recorded",
    }
    path.write_text(json.dumps(config))  # JSON is YAML: the client reads either
    return path


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Any]:
    """`cluster("healthy")` serves that recording and returns (server, kubeconfig path)."""
    servers: list[RecordedApiServer] = []

    def serve(recording: str, **changes: Any) -> tuple[RecordedApiServer, Path]:
        """`changes`: API path -> recorded response that replaces (or adds to) the recording's."""
        responses = json.loads((FIXTURES / f"{recording}.json").read_text())["responses"]
        responses.update(changes)
        server = RecordedApiServer(responses)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server, write_kubeconfig(tmp_path / f"{recording}.kubeconfig", server.url)

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def status(kubeconfig: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str], str]:
    code = main(["k8s", "status", "--kubeconfig", str(kubeconfig), *extra])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def line_of(lines: list[str], *words: str) -> str:
    found = [line for line in lines if all(word in line for word in words)]
    assert len(found) == 1, f"expected one line with {words}, got {found} in:\n" + "\n".join(lines)
    return found[0]


def test_healthy_deployment_reports_job_checkpoint_kafka_topics_pods_and_grafana_url(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server, kubeconfig = cluster("healthy")
    code, lines, err = status(kubeconfig, capsys)

    assert code == 0, "\n".join(lines) + err
    assert lines[0] == f"tickpipe in namespace tickpipe on {server.url}"
    job = line_of(lines, "FlinkDeployment tickpipe-ma-job")
    assert job.lstrip().startswith("ok")
    assert "job RUNNING, JobManager READY, lifecycle STABLE" in job
    assert "last checkpoint #58" in job
    assert "file:/flink-data/checkpoints/6b3f0a9c1d2e4f5a8b7c6d5e4f3a2b1c/chk-58" in job
    kafka = line_of(lines, "Kafka tickpipe")
    assert "Ready, Kafka 4.3.1, bootstrap tickpipe-kafka-bootstrap.tickpipe.svc:9092" in kafka
    assert "partitions: 6" in line_of(lines, "KafkaTopic price-ticks ")
    assert "partitions: 1" in line_of(lines, "KafkaTopic price-ticks.dlq")
    assert "running, ready, 1 restart(s)" in line_of(lines, "Pod tickpipe-ingestor-")
    assert "completed" in line_of(lines, "Pod tickpipe-migrator-1-")
    assert sum(line.lstrip().startswith("ok    Pod ") for line in lines) == 8
    assert "  Grafana: http://grafana.localtest.me/" in lines
    assert "exchange connected (2/2 feeds)" in line_of(lines, "Ingestor tickpipe-ingestor ")
    assert lines[-1] == "healthy"


def test_reads_go_through_the_kubeconfig_credentials_and_the_api_paths(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    server, kubeconfig = cluster("healthy")
    status(kubeconfig, capsys)

    paths = {path for path, _ in server.requests}
    assert "/apis/flink.apache.org/v1beta1/namespaces/tickpipe/flinkdeployments" in paths
    assert "/apis/kafka.strimzi.io/v1/namespaces/tickpipe/kafkatopics" in paths
    assert "/api/v1/namespaces/tickpipe/pods" in paths
    assert {auth for _, auth in server.requests} == {f"Bearer {TOKEN}"}


def test_failing_job_unready_topic_and_crash_looping_pod_are_each_a_problem(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = cluster("degraded")
    code, lines, _ = status(kubeconfig, capsys)

    assert code == 1
    job = line_of(lines, "FlinkDeployment tickpipe-ma-job")
    assert job.lstrip().startswith("FAIL")
    assert "job FAILING" in job
    assert "Recovery is suppressed by ExponentialDelayRestartBackoffTimeStrategy" in job
    topic = line_of(lines, "KafkaTopic price-ticks.dlq")
    assert topic.lstrip().startswith("FAIL")
    assert "Replication factor: 3 larger than available brokers: 1., partitions: 1" in topic
    ingestor = line_of(lines, "Pod tickpipe-ingestor-")
    assert ingestor.lstrip().startswith("FAIL")
    assert "ingestor CrashLoopBackOff, 5 restart(s)" in ingestor
    assert lines[-1] == "NOT healthy: 3 problem(s)"


def test_checkpoint_falls_back_to_the_operator_status_when_the_rest_proxy_fails(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = cluster("degraded")
    _, lines, _ = status(kubeconfig, capsys)

    job = line_of(lines, "FlinkDeployment tickpipe-ma-job")
    assert "(operator status)" in job
    assert "last checkpoint" in job


def test_failed_job_attempt_is_not_a_problem_once_its_job_completed(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = cluster("degraded")
    _, lines, _ = status(kubeconfig, capsys)

    retried = line_of(lines, "Pod tickpipe-migrator-1-b9q4r")
    assert retried.lstrip().startswith("ok")
    assert "failed attempt of job tickpipe-migrator-1" in retried


def test_missing_grafana_ingress_is_a_note_with_the_port_forward_alternative(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = cluster("degraded")
    _, lines, _ = status(kubeconfig, capsys)

    assert not any(line.startswith("  Grafana:") for line in lines)
    assert "port-forward" in line_of(lines, "note: no Grafana Ingress in tickpipe")


def test_cluster_without_the_operators_says_which_apis_are_missing(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = cluster("no-operators")
    code, lines, err = status(kubeconfig, capsys)

    assert code == 1
    assert err == ""
    assert "the FlinkDeployment API is not served by this cluster" in line_of(lines, "FlinkDeployment -")
    assert "the Kafka API is not served by this cluster" in line_of(lines, "Kafka -")
    assert "no pods in the namespace" in line_of(lines, "Pod -")


def test_unreachable_api_server_is_one_line_on_stderr_and_a_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = RecordedApiServer({})  # bound, then closed: nothing listens on its port any more
    url = closed.url
    closed.server_close()
    code, lines, err = status(write_kubeconfig(tmp_path / "kubeconfig", url), capsys)

    assert code == 1
    assert lines == []
    assert err.splitlines() == [
        f"tickpipe k8s: no Kubernetes cluster reachable at {url} ([Errno 111] Connection refused)"
    ]


def test_missing_kubeconfig_is_one_line_on_stderr_and_a_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = status(tmp_path / "no-such-kubeconfig", capsys)

    assert code == 1
    assert lines == []
    assert len(err.splitlines()) == 1
    assert err.startswith("tickpipe k8s: no Kubernetes cluster configured: no usable kubeconfig at ")
    assert "Traceback" not in err


INGESTOR_METRICS = "/api/v1/namespaces/tickpipe/services/tickpipe-ingestor:metrics/proxy/metrics"


def test_an_exchange_that_refuses_the_ingestor_is_a_problem_that_points_at_its_log(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """/readyz means ready to produce, so a refused exchange (HTTP 451 in some regions) leaves the pod ready: its
    gauge is where it shows."""
    scrape = (
        "# TYPE tickpipe_ingest_exchange_connected gauge\n"
        'tickpipe_ingest_exchange_connected{feed="0"} 0.0\n'
        'tickpipe_ingest_exchange_connected{feed="1"} 1.0\n'
    )
    server, kubeconfig = cluster("healthy", **{INGESTOR_METRICS: {"status": 200, "body": scrape}})
    code, lines, _ = status(kubeconfig, capsys)

    assert code == 1
    ingestor = line_of(lines, "Ingestor tickpipe-ingestor ")
    assert ingestor.lstrip().startswith("FAIL")
    assert "exchange NOT connected: 1/2 feed(s) (0)" in ingestor
    assert "HTTP 451/403" in ingestor and "kubectl -n tickpipe logs statefulset/tickpipe-ingestor" in ingestor
    assert "Pod tickpipe-ingestor-" in line_of(lines, "ok", "Pod tickpipe-ingestor-")  # still ready to produce
    assert lines[-1] == "NOT healthy: 1 problem(s)"
    assert (INGESTOR_METRICS, f"Bearer {TOKEN}") in server.requests


def test_an_ingestor_without_the_exchange_gauge_is_unknown_not_a_problem(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    older = "# TYPE tickpipe_ingest_connections gauge\ntickpipe_ingest_connections 2.0\n"
    _, kubeconfig = cluster("healthy", **{INGESTOR_METRICS: {"status": 200, "body": older}})
    code, lines, _ = status(kubeconfig, capsys)

    assert code == 0
    assert "exchange state unknown" in line_of(lines, "Ingestor tickpipe-ingestor ")


def test_metrics_the_proxy_cannot_reach_are_a_note_with_the_port_forward_alternative(
    cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = cluster("degraded")
    _, lines, _ = status(kubeconfig, capsys)

    assert not [line for line in lines if "Ingestor " in line]
    note = line_of(lines, "note: ingestor tickpipe-ingestor:")
    assert "503 Service Unavailable" in note or "503" in note
    assert "kubectl -n tickpipe port-forward svc/tickpipe-ingestor 9100" in note
