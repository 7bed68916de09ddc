"""Prometheus `/metrics` plus Kubernetes probes (`/healthz`, `/readyz`) on one port, for every long-running stage."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

HealthCheck = Callable[[], tuple[bool, str]]


def _always_ok() -> tuple[bool, str]:
    return True, "ok"


class MetricsServer:
    """Serves metrics and health on a background thread. Port 0 picks a free port (see `.port`)."""

    def __init__(
        self,
        port: int,
        *,
        live: HealthCheck = _always_ok,
        ready: HealthCheck = _always_ok,
        registry: CollectorRegistry = REGISTRY,
        host: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            "/healthz": lambda: _probe(live),
            "/readyz": lambda: _probe(ready),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                status, content_type, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes every few seconds would flood the log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _probe(check: HealthCheck) -> tuple[int, str, bytes]:
    ok, detail = check()
    return (200 if ok else 503), "text/plain", (detail + "\n").encode()


def scrape(url: str, timeout: float = 2.0) -> list[Sample]:
    """Every sample a Prometheus endpoint serves (raises OSError when it does not answer)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local or configured endpoints
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def sample_sum(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value for s in samples if s.name == name and all(s.labels.get(key) == value for key, value in labels.items())
    )
