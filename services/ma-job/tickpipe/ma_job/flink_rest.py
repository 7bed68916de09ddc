"""The few calls of Flink's REST API the job's launcher needs: find, watch, checkpoint-inspect and stop a job."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tickpipe.errors import FlinkRestError

TERMINAL_STATES = {"FINISHED", "FAILED", "CANCELED", "SUSPENDED"}


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    name: str
    state: str


class FlinkRest:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the configured Flink REST URL
            self.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise FlinkRestError(f"Flink REST {method} {path}: HTTP {error.code} {detail}") from None
        except OSError as error:
            raise FlinkRestError(f"Flink REST API at {self.base_url} not reachable ({error})") from None
        return json.loads(payload) if payload else None

    def jobs(self) -> list[JobInfo]:
        overview = self._call("GET", "/jobs/overview")
        return [JobInfo(job["jid"], job["name"], job["state"]) for job in overview["jobs"]]

    def running(self, name: str) -> list[JobInfo]:
        return [job for job in self.jobs() if job.name == name and job.state not in TERMINAL_STATES]

    def state(self, job_id: str) -> str:
        return str(self._call("GET", f"/jobs/{job_id}")["state"])

    def latest_checkpoint(self, job_id: str) -> str | None:
        """The external path of the newest completed checkpoint or savepoint, if any."""
        latest = self._call("GET", f"/jobs/{job_id}/checkpoints").get("latest", {})
        done = [entry for entry in (latest.get("completed"), latest.get("savepoint")) if entry]
        newest = max(done, key=lambda entry: entry.get("latest_ack_timestamp", 0), default=None)
        return str(newest["external_path"]) if newest else None

    def vertex_states(self, job_id: str) -> list[str]:
        return [str(vertex["status"]) for vertex in self._call("GET", f"/jobs/{job_id}")["vertices"]]

    def root_exception(self, job_id: str) -> str:
        """The job's latest failure as Flink's stack trace text ("" while it has none)."""
        return str(self._call("GET", f"/jobs/{job_id}/exceptions").get("root-exception") or "")

    def restarts(self, job_id: str) -> int:
        """How often Flink has restarted the job (its `numRestarts` metric). The REST server fetches metrics in the
        background on demand, so the first asks after a submit can find none yet: 0 until it has them."""
        values = self._call("GET", f"/jobs/{job_id}/metrics?get=numRestarts") or []
        return int(values[0]["value"]) if values else 0

    def completed_checkpoints(self, job_id: str) -> int:
        counts = self._call("GET", f"/jobs/{job_id}/checkpoints").get("counts", {})
        return int(counts.get("completed", 0))

    def stop_with_savepoint(self, job_id: str, target_directory: str | None, timeout: float = 120.0) -> str:
        body: dict[str, Any] = {"drain": False, "formatType": "CANONICAL"}
        if target_directory:
            body["targetDirectory"] = target_directory
        trigger = self._call("POST", f"/jobs/{job_id}/stop", body)["request-id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self._call("GET", f"/jobs/{job_id}/savepoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status.get("operation", {})
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "").splitlines()[:1]
                    raise FlinkRestError(f"stop-with-savepoint failed: {' '.join(cause)}")
                return str(operation["location"])
            time.sleep(0.5)
        raise FlinkRestError(f"stop-with-savepoint of job {job_id} did not complete within {timeout:.0f} s")

    def cancel(self, job_id: str) -> None:
        self._call("PATCH", f"/jobs/{job_id}?mode=cancel")
