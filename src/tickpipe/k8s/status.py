"""Collect and render the health of a tickpipe deployment from the Kubernetes API.

Every read goes through the `kubernetes` client (kubeconfig or in-cluster credentials, the API server's paths) and
is parsed from the API's own JSON, so what is checked is exactly what `kubectl get -o json` shows:

  FlinkDeployment (flink.apache.org/v1beta1)  job state, JobManager deployment, lifecycle, error; the last completed
                                              checkpoint from the JobManager's REST API through the API server's
                                              service proxy, else the operator's checkpoint timestamps
  Kafka, KafkaTopic (kafka.strimzi.io/v1)     the Ready condition (and its message when not ready)
  Pod (v1)                                    running and ready, or completed; waiting reasons, restarts
  Service (v1) of the ingestor                the exchange connection of each feed (the ingestor's gauge
                                              tickpipe_ingest_exchange_connected, read from its /metrics through the
                                              API server's service proxy): readiness only means "ready to produce",
                                              so this is where a refused exchange (HTTP 451/403) shows
  Ingress (networking.k8s.io/v1)              Grafana's URL
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tickpipe.errors import ClusterUnreachable

FLINK = ("flink.apache.org", "v1beta1", "flinkdeployments")
KAFKA = ("kafka.strimzi.io", "v1", "kafkas")
KAFKA_TOPIC = ("kafka.strimzi.io", "v1", "kafkatopics")
HEALTHY_JOB_MANAGER = {"READY"}
HEALTHY_LIFECYCLE = {"STABLE", "DEPLOYED"}
EXCHANGE_CONNECTED = "tickpipe_ingest_exchange_connected"


@dataclass(frozen=True)
class Check:
    kind: str
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    server: str
    namespace: str
    checks: list[Check] = field(default_factory=list)
    grafana_urls: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


class Api:
    """The few reads `collect` needs, as plain JSON, through the kubernetes client."""

    def __init__(self, api_client: Any, timeout: float) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.server = str(api_client.configuration.host)
        self.timeout = timeout
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.networking = client.NetworkingV1Api(api_client)
        self.version = client.VersionApi(api_client)

    def _body(self, method: Any, *args: Any, **kwargs: Any) -> bytes:
        import urllib3

        try:
            response = method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except urllib3.exceptions.HTTPError as error:
            raise ClusterUnreachable(f"no Kubernetes cluster reachable at {self.server} ({_reason(error)})") from None
        try:
            return bytes(response.data)
        finally:
            response.release_conn()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        return json.loads(self._body(method, *args, **kwargs))

    def server_version(self) -> str:
        return str(self._call(self.version.get_code).get("gitVersion", "?"))

    def custom_objects(self, namespace: str, resource: tuple[str, str, str]) -> list[dict[str, Any]]:
        group, version, plural = resource
        items = self._call(self.custom.list_namespaced_custom_object, group, version, namespace, plural)["items"]
        return list(items)

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return list(self._call(self.core.list_namespaced_pod, namespace)["items"])

    def ingresses(self, namespace: str) -> list[dict[str, Any]]:
        return list(self._call(self.networking.list_namespaced_ingress, namespace)["items"])

    def service_proxy(self, namespace: str, service: str, path: str) -> Any:
        return self._call(self.core.connect_get_namespaced_service_proxy_with_path, service, namespace, path)

    def service_proxy_text(self, namespace: str, service: str, path: str) -> str:
        body = self._body(self.core.connect_get_namespaced_service_proxy_with_path, service, namespace, path)
        return body.decode("utf-8", errors="replace")

    def services(self, namespace: str) -> list[dict[str, Any]]:
        return list(self._call(self.core.list_namespaced_service, namespace)["items"])


def connect(kubeconfig: str | None = None, context: str | None = None, timeout: float = 10.0) -> Api:
    """Credentials from the kubeconfig (or, inside a pod, the service account), then one request to prove the API
    server answers; ClusterUnreachable otherwise."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    except (config.ConfigException, OSError, TypeError, ValueError) as error:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
            raise ClusterUnreachable(
                f"no Kubernetes cluster configured: no usable kubeconfig at {where} ({error})"
            ) from None
    configuration.retries = 0  # one attempt: an answer or a clear failure within the timeout, no retry warnings
    api = Api(client.ApiClient(configuration), timeout)
    api.server_version()
    return api


def collect(api: Api, namespace: str, now: float | None = None) -> Report:
    """Read everything once and judge it. Missing CRDs or forbidden reads become failed checks, not exceptions."""
    from kubernetes.client.exceptions import ApiException

    now = time.time() if now is None else now
    report = Report(server=api.server, namespace=namespace)
    sections: list[tuple[str, Callable[[], list[Check]]]] = [
        ("FlinkDeployment", lambda: _flink(api, namespace, now)),
        ("Kafka", lambda: _kafka(api, namespace)),
        ("Pod", lambda: _pods(api.pods(namespace))),
        ("Ingestor", lambda: _ingestors(api, namespace, report.notes)),
    ]
    for kind, section in sections:
        try:
            report.checks.extend(section())
        except ApiException as error:
            report.checks.append(Check(kind, "-", False, _api_error(kind, error)))
    try:
        report.grafana_urls = _grafana_urls(api.ingresses(namespace))
    except ApiException as error:
        report.notes.append(_api_error("Ingress", error))
    if not report.grafana_urls:
        report.notes.append(
            f"no Grafana Ingress in {namespace}: kubectl -n {namespace} port-forward svc/<release>-grafana 3000"
        )
    return report


def render(report: Report) -> str:
    width = max((len(f"{c.kind} {c.name}") for c in report.checks), default=10)
    lines = [f"tickpipe in namespace {report.namespace} on {report.server}"]
    for check in report.checks:
        label = f"{check.kind} {check.name}"
        lines.append(f"  {'ok' if check.ok else 'FAIL':<4}  {label:<{width}}  {check.detail}")
    for url in report.grafana_urls:
        lines.append(f"  Grafana: {url}")
    lines.extend(f"  note: {note}" for note in report.notes)
    problems = report.problems
    lines.append("healthy" if not problems else f"NOT healthy: {len(problems)} problem(s)")
    return "\n".join(lines)


# -- FlinkDeployment ----------------------------------------------------------------------------------------------
def _flink(api: Api, namespace: str, now: float) -> list[Check]:
    deployments = api.custom_objects(namespace, FLINK)
    if not deployments:
        return [Check("FlinkDeployment", "-", False, f"none in {namespace} (is the ma-job chart installed?)")]
    return [_flink_check(api, namespace, deployment, now) for deployment in deployments]


def _flink_check(api: Api, namespace: str, deployment: dict[str, Any], now: float) -> Check:
    from kubernetes.client.exceptions import ApiException

    name = deployment["metadata"]["name"]
    status = deployment.get("status") or {}
    job = status.get("jobStatus") or {}
    state = job.get("state") or "UNKNOWN"
    job_manager = status.get("jobManagerDeploymentStatus") or "UNKNOWN"
    lifecycle = status.get("lifecycleState") or "UNKNOWN"
    ok = state == "RUNNING" and job_manager in HEALTHY_JOB_MANAGER and lifecycle in HEALTHY_LIFECYCLE
    parts = [f"job {state}", f"JobManager {job_manager}", f"lifecycle {lifecycle}"]
    checkpoint = None
    if job.get("jobId") and state == "RUNNING":
        try:
            checkpoint = _rest_checkpoint(
                api.service_proxy(namespace, f"{name}-rest:rest", f"jobs/{job['jobId']}/checkpoints"), now
            )
        except ApiException:
            checkpoint = None  # the proxy may be blocked (NetworkPolicy): fall back to what the operator recorded
    parts.append(checkpoint or _operator_checkpoint(job, now))
    if status.get("error"):
        parts.append(f"error: {_operator_error(status['error'])}")
    return Check("FlinkDeployment", name, ok, ", ".join(parts))


def _operator_error(error: str) -> str:
    """The operator records errors as JSON ({"type", "message", "throwableList"}); its message is what matters."""
    try:
        message = json.loads(error).get("message")
    except (ValueError, AttributeError):
        message = None
    return _one_line(message or error)


def _rest_checkpoint(body: dict[str, Any], now: float) -> str:
    counts = body.get("counts") or {}
    completed = (body.get("latest") or {}).get("completed")
    failed = int(counts.get("failed", 0))
    suffix = f" ({failed} failed)" if failed else ""
    if not completed:
        return f"no completed checkpoint yet{suffix}"
    age = _age(int(completed["latest_ack_timestamp"]) / 1000, now)
    return f"last checkpoint #{completed['id']} {age} at {completed.get('external_path', '?')}{suffix}"


def _operator_checkpoint(job: dict[str, Any], now: float) -> str:
    info = job.get("checkpointInfo") or {}
    stamps = [
        value
        for value in ((info.get("lastCheckpoint") or {}).get("timeStamp"), info.get("lastPeriodicCheckpointTimestamp"))
        if value
    ]
    if not stamps:
        return "last checkpoint unknown"
    return f"last checkpoint {_age(max(stamps) / 1000, now)} (operator status)"


# -- Kafka (Strimzi) ----------------------------------------------------------------------------------------------
def _kafka(api: Api, namespace: str) -> list[Check]:
    clusters = api.custom_objects(namespace, KAFKA)
    checks = [_ready_check("Kafka", cluster, _kafka_detail(cluster)) for cluster in clusters]
    if not clusters:
        checks.append(Check("Kafka", "-", False, f"no Kafka resource in {namespace} (is the kafka chart installed?)"))
    for topic in api.custom_objects(namespace, KAFKA_TOPIC):
        spec = topic.get("spec") or {}
        name = spec.get("topicName") or topic["metadata"]["name"]
        checks.append(_ready_check("KafkaTopic", topic, f"partitions: {spec.get('partitions', '?')}", name))
    return checks


def _kafka_detail(cluster: dict[str, Any]) -> str:
    status = cluster.get("status") or {}
    bootstrap = sorted({item.get("bootstrapServers", "") for item in status.get("listeners") or []} - {""})
    version = status.get("kafkaVersion") or (cluster.get("spec") or {}).get("kafka", {}).get("version", "?")
    return f"Kafka {version}" + (f", bootstrap {', '.join(bootstrap)}" if bootstrap else "")


def _ready_check(kind: str, resource: dict[str, Any], detail: str, name: str | None = None) -> Check:
    conditions = (resource.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    name = name or resource["metadata"]["name"]
    if ready is None:
        reasons = [f"{c.get('type')}: {_one_line(c.get('message', ''))}" for c in conditions if c.get("message")]
        return Check(kind, name, False, "; ".join(["not ready (no Ready condition yet)", *reasons]) + f", {detail}")
    if ready.get("status") == "True":
        return Check(kind, name, True, f"Ready, {detail}")
    why = _one_line(ready.get("message") or ready.get("reason") or "")
    return Check(kind, name, False, f"not ready{': ' + why if why else ''}, {detail}")


# -- Pods ---------------------------------------------------------------------------------------------------------
def _pods(pods: list[dict[str, Any]]) -> list[Check]:
    if not pods:
        return [Check("Pod", "-", False, "no pods in the namespace")]
    completed_jobs = {_job_of(pod) for pod in pods if (pod.get("status") or {}).get("phase") == "Succeeded"}
    return [_pod_check(pod, completed_jobs) for pod in sorted(pods, key=lambda pod: pod["metadata"]["name"])]


def _job_of(pod: dict[str, Any]) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    return labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")


def _pod_check(pod: dict[str, Any], completed_jobs: set[str | None]) -> Check:
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    phase = status.get("phase") or "Unknown"
    if phase in {"Succeeded", "Failed"}:
        return _finished_pod_check(pod, completed_jobs)
    containers = status.get("containerStatuses") or []
    restarts = sum(int(c.get("restartCount", 0)) for c in containers)
    restarted = f", {restarts} restart(s)" if restarts else ""
    waiting = [
        f"{c['name']} {c['state']['waiting'].get('reason', 'waiting')}"
        for c in containers
        if (c.get("state") or {}).get("waiting")
    ]
    not_ready = [c["name"] for c in containers if not c.get("ready")]
    if phase == "Running" and containers and not not_ready:
        return Check("Pod", name, True, f"running, ready{restarted}")
    if waiting:
        return Check("Pod", name, False, f"{phase}: {', '.join(waiting)}{restarted}")
    if phase == "Pending":
        unscheduled = [c for c in status.get("conditions") or [] if c.get("status") == "False" and c.get("message")]
        why = f": {_one_line(unscheduled[0]['message'])}" if unscheduled else ""
        return Check("Pod", name, False, f"pending{why}")
    return Check("Pod", name, False, f"{phase.lower()}, not ready: {', '.join(not_ready) or '?'}{restarted}")


def _finished_pod_check(pod: dict[str, Any], completed_jobs: set[str | None]) -> Check:
    """A Job's pod: completed is fine; a failed attempt is fine once another attempt of its Job completed."""
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    if status.get("phase") == "Succeeded":
        return Check("Pod", name, True, "completed")
    job = _job_of(pod)
    if job is not None and job in completed_jobs:
        return Check("Pod", name, True, f"failed attempt of job {job}, which has since completed")
    return Check("Pod", name, False, f"failed: {_one_line(status.get('reason') or status.get('message') or '?')}")


# -- the ingestor's exchange connection ------------------------------------------------------------------------------
def _ingestors(api: Api, namespace: str, notes: list[str]) -> list[Check]:
    """One check per ingestor Service (the chart's app.kubernetes.io/name=ingestor with a `metrics` port)."""
    checks = []
    for service in api.services(namespace):
        labels = service["metadata"].get("labels") or {}
        ports = {port.get("name"): port.get("port") for port in (service.get("spec") or {}).get("ports") or []}
        if labels.get("app.kubernetes.io/name") != "ingestor" or "metrics" not in ports:
            continue
        check = _exchange_check(api, namespace, service["metadata"]["name"], ports["metrics"], notes)
        if check is not None:
            checks.append(check)
    return checks


def _exchange_check(api: Api, namespace: str, name: str, port: int, notes: list[str]) -> Check | None:
    from kubernetes.client.exceptions import ApiException

    try:
        text = api.service_proxy_text(namespace, f"{name}:metrics", "metrics")
    except ApiException as error:
        # A NetworkPolicy that admits only in-namespace scrapers also keeps the API server's proxy out: not a
        # problem of the pipeline, so a note with the way to look instead.
        notes.append(
            f"ingestor {name}: /metrics not readable through the API server's service proxy ({error.status} "
            f"{error.reason}): kubectl -n {namespace} port-forward svc/{name} {port}, then /metrics "
            f"({EXCHANGE_CONNECTED})"
        )
        return None
    feeds = _exchange_feeds(text)
    if feeds is None:
        return Check("Ingestor", name, True, f"exchange state unknown (no {EXCHANGE_CONNECTED} in its /metrics)")
    down = sorted(feed for feed, connected in feeds.items() if not connected)
    if not feeds:
        return Check("Ingestor", name, False, "no exchange connection yet (no feed reported)")
    if down:
        return Check(
            "Ingestor",
            name,
            False,
            f"exchange NOT connected: {len(down)}/{len(feeds)} feed(s) ({', '.join(down)}); the reason is in its log "
            f"(HTTP 451/403: the exchange refuses this region): kubectl -n {namespace} logs statefulset/{name}",
        )
    return Check("Ingestor", name, True, f"exchange connected ({len(feeds)}/{len(feeds)} feeds)")


def _exchange_feeds(text: str) -> dict[str, bool] | None:
    """{feed: connected} from the gauge, or None when the ingestor does not export it."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return None
    for family in families:
        if family.name == EXCHANGE_CONNECTED:
            return {sample.labels.get("feed", "?"): sample.value >= 1 for sample in family.samples}
    return None


# -- Grafana ------------------------------------------------------------------------------------------------------
def _grafana_urls(ingresses: list[dict[str, Any]]) -> list[str]:
    def is_grafana(ingress: dict[str, Any]) -> bool:
        labels = ingress["metadata"].get("labels") or {}
        return labels.get("app.kubernetes.io/name") == "grafana" or "grafana" in ingress["metadata"]["name"]

    urls: list[str] = []
    for ingress in filter(is_grafana, ingresses):
        spec = ingress.get("spec") or {}
        tls_hosts = {host for tls in spec.get("tls") or [] for host in tls.get("hosts") or []}
        balancers = ((ingress.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        fallback = next((b.get("hostname") or b.get("ip") for b in balancers if b.get("hostname") or b.get("ip")), None)
        for rule in spec.get("rules") or []:
            host = rule.get("host") or fallback
            if not host:
                continue
            paths = ((rule.get("http") or {}).get("paths")) or [{"path": "/"}]
            scheme = "https" if host in tls_hosts else "http"
            urls.append(f"{scheme}://{host}{paths[0].get('path') or '/'}")
    return list(dict.fromkeys(urls))


# -- helpers ------------------------------------------------------------------------------------------------------
def _age(timestamp: float, now: float) -> str:
    seconds = max(0, int(now - timestamp))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _one_line(text: str, limit: int = 160) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _api_error(kind: str, error: Any) -> str:
    if error.status == 404:
        return f"the {kind} API is not served by this cluster (operator or CRD not installed? see k8s/README.md)"
    if error.status in (401, 403):
        return f"not allowed to read {kind} resources ({error.status} {error.reason})"
    return f"reading {kind} resources failed: {error.status} {error.reason}"


def _reason(error: Exception) -> str:
    """`[Errno 111] Connection refused` out of urllib3's `HTTPConnectionPool(...): Max retries ... (Caused by ...)`."""
    reason = getattr(error, "reason", None) or error
    return _one_line(str(reason).rsplit(": ", 1)[-1], 120)
