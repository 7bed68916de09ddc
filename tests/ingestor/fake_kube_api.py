"""A Kubernetes API server for Leases only, keeping state: GET, POST and PUT with resourceVersion checks answered
the way the real API server answers them (404 NotFound, 409 AlreadyExists, 409 Conflict). The real `kubernetes`
client talks to it over HTTP."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LEASES = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/(?P<ns>[^/]+)/leases(?:/(?P<name>[^/?]+))?")


class FakeKubeApi:
    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.lock = threading.Lock()
        self.down = False  # answer 503 to everything (an API server outage)
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.handle(self, "GET")

            def do_POST(self) -> None:
                api.handle(self, "POST")

            def do_PUT(self) -> None:
                api.handle(self, "PUT")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeKubeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        match = LEASES.match(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length)) if length else None
        with self.lock:
            if self.down:
                status, answer = 503, _status(503, "ServiceUnavailable", "the server is down")
            elif not match:
                status, answer = 404, _status(404, "NotFound", f"no route {request.path}")
            else:
                status, answer = self._lease(method, match["ns"], match["name"], body)
            self.requests.append((method, request.path, status))
        data = json.dumps(answer).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def _lease(  # noqa: PLR0911 - one return per answer of the API server
        self, method: str, namespace: str, name: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if method == "GET" and name:
            lease = self.leases.get((namespace, name))
            return (200, lease) if lease else (404, _status(404, "NotFound", f'leases "{name}" not found'))
        if method == "POST" and not name:
            name = body["metadata"]["name"]
            if (namespace, name) in self.leases:
                return 409, _status(409, "AlreadyExists", f'leases "{name}" already exists')
            return 201, self._store(namespace, name, body)
        if method == "PUT" and name:
            current = self.leases.get((namespace, name))
            if current is None:
                return 404, _status(404, "NotFound", f'leases "{name}" not found')
            sent = body["metadata"].get("resourceVersion")
            if sent != current["metadata"]["resourceVersion"]:
                message = f'Operation cannot be fulfilled on leases "{name}": the object has been modified'
                return 409, _status(409, "Conflict", message)
            return 200, self._store(namespace, name, body)
        return 405, _status(405, "MethodNotAllowed", method)

    def _store(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(self.version)},
            "spec": body.get("spec") or {},
        }
        self.leases[namespace, name] = lease
        return lease


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }
