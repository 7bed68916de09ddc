"""Which ingestor replica produces: a Lease held by one leader, hot standbys ready to take it over.

The record is a `coordination.k8s.io/v1` Lease (holderIdentity, leaseDurationSeconds, acquireTime, renewTime,
leaseTransitions). Every change is a compare-and-swap on the object's resourceVersion, so two candidates can never
both win: the API server answers the loser 409. Locally the same record lives in a file under the state dir, swapped
under an exclusive lock with a version counter (`FileLeaseStore`), so `tickpipe run` and the tests use the same
elector as a cluster.

Expiry is judged the way client-go judges it, never by comparing clocks: a candidate notes *on its own monotonic
clock* when it last saw the record change, and takes the lease over only when it has seen no change for
leaseDurationSeconds. A holder whose wall clock jumps, or whose renewTime is off by hours, neither loses the lease
nor lets another take it while it renews; a leader that cannot renew within `renew_deadline` (on its monotonic
clock) steps down before its lease can expire for the others.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

LEASE_DURATION = 15.0  # client-go's defaults: the lease lasts 15 s, a leader renews every 2 s and gives up after 10 s
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0


class Conflict(Exception):
    """Another candidate changed (or created) the lease first."""


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # "" when released
    lease_duration_seconds: int
    acquire_time: str  # RFC 3339 with microseconds, the holder's wall clock: informative only
    renew_time: str
    transitions: int


class LeaseStore(Protocol):
    def get(self) -> tuple[LeaseRecord, str] | None:
        """The record and its version, or None when there is no lease yet."""

    def create(self, record: LeaseRecord) -> str:
        """Create the lease; return its version; raise Conflict if it exists."""

    def replace(self, record: LeaseRecord, version: str) -> str:
        """Swap the record if the lease is still at `version`; return the new version; raise Conflict if not."""


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    """One candidate. Call `step()` every RETRY_PERIOD; `leading` says whether it may produce right now."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        *,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], str] = _now_rfc3339,
    ) -> None:
        if not 0 < renew_deadline < lease_duration:
            raise ValueError("the renew deadline must be shorter than the lease")
        self.store, self.identity = store, identity
        self.lease_duration, self.renew_deadline = lease_duration, renew_deadline
        self.monotonic, self.wall_clock = monotonic, wall_clock
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._renewed_at: float | None = None  # monotonic time of our last successful acquire/renew

    @property
    def leading(self) -> bool:
        return self._renewed_at is not None and self.monotonic() - self._renewed_at < self.renew_deadline

    def unchanged_for(self) -> float:
        """Seconds (monotonic) since this candidate last saw the lease record change: at a takeover, how long the
        previous holder had been silent, i.e. the handover time."""
        return self.monotonic() - self._observed_at

    @property
    def holder(self) -> str | None:
        """Who holds the lease as last seen (None before the first look)."""
        return self._observed.holder if self._observed else None

    def step(self) -> bool:
        """Acquire or renew once; return whether this candidate leads afterwards."""
        now = self.monotonic()
        try:
            current = self.store.get()
            if current is None:
                record = LeaseRecord(self.identity, int(self.lease_duration), self.wall_clock(), self.wall_clock(), 0)
                self.store.create(record)
                return self._won(record, now)
            record, version = current
            if record != self._observed:
                self._observed, self._observed_at = record, now
            held_by_other = record.holder not in ("", self.identity)
            if held_by_other and now - self._observed_at < record.lease_duration_seconds:
                self._renewed_at = None
                return False
            stamp = self.wall_clock()
            mine = record.holder == self.identity
            new = LeaseRecord(
                self.identity,
                int(self.lease_duration),
                record.acquire_time if mine else stamp,
                stamp,
                record.transitions if mine else record.transitions + 1,
            )
            self.store.replace(new, version)
            return self._won(new, now)
        except (Conflict, OSError):
            return self.leading  # lost the race or could not reach the store: still leading until the deadline

    def _won(self, record: LeaseRecord, now: float) -> bool:
        self._observed, self._observed_at, self._renewed_at = record, now, now
        return True

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown): a standby takes over on its next step, not after expiry."""
        self._renewed_at = None
        try:
            current = self.store.get()
            if current and current[0].holder == self.identity:
                self.store.replace(replace(current[0], holder="", renew_time=self.wall_clock()), current[1])
        except (Conflict, OSError):
            pass


class FileLeaseStore:
    """The lease as a JSON file, swapped under an exclusive flock: the local backend (one machine, many processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _locked(self, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]) -> dict[str, Any] | None:
        with os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            text = handle.read()
            current = json.loads(text) if text.strip() else None
            updated = change(current)
            if updated is not None and updated is not current:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps(updated))
                handle.flush()
                os.fsync(handle.fileno())
            return updated

    def get(self) -> tuple[LeaseRecord, str] | None:
        current = self._locked(lambda data: data)
        return (LeaseRecord(**current["record"]), str(current["version"])) if current else None

    def create(self, record: LeaseRecord) -> str:
        def change(data: dict[str, Any] | None) -> dict[str, Any]:
            if data is not None:
                raise Conflict("the lease exists")
            return {"record": asdict(record), "version": 1}

        return str(self._checked(change)["version"])

    def replace(self, record: LeaseRecord, version: str) -> str:
        def change(data: dict[str, Any] | None) -> dict[str, Any]:
            if data is None or str(data["version"]) != version:
                raise Conflict("the lease changed")
            return {"record": asdict(record), "version": int(data["version"]) + 1}

        return str(self._checked(change)["version"])

    def _checked(self, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        result = self._locked(change)
        assert result is not None  # noqa: S101 - `change` never returns None
        return result


class KubernetesLeaseStore:
    """The lease as a `coordination.k8s.io/v1` Lease, through the kubernetes client (in-cluster or kubeconfig)."""

    def __init__(self, name: str, namespace: str, api: Any = None) -> None:
        from kubernetes import client

        self.name, self.namespace = name, namespace
        self.client = client
        self.api = api or client.CoordinationV1Api()

    def get(self) -> tuple[LeaseRecord, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise OSError(f"reading lease {self.namespace}/{self.name}: {error.status} {error.reason}") from None
        spec, metadata = lease.spec, lease.metadata
        if spec is None or metadata is None:
            raise OSError(f"lease {self.namespace}/{self.name} has no spec or metadata")
        record = LeaseRecord(
            holder=spec.holder_identity or "",
            lease_duration_seconds=int(spec.lease_duration_seconds or LEASE_DURATION),
            acquire_time=_format(spec.acquire_time),
            renew_time=_format(spec.renew_time),
            transitions=int(spec.lease_transitions or 0),
        )
        return record, str(metadata.resource_version)

    def _body(self, record: LeaseRecord, version: str | None) -> Any:
        return self.client.V1Lease(
            metadata=self.client.V1ObjectMeta(name=self.name, resource_version=version),
            spec=self.client.V1LeaseSpec(
                holder_identity=record.holder or None,
                lease_duration_seconds=record.lease_duration_seconds,
                acquire_time=_parse(record.acquire_time),
                renew_time=_parse(record.renew_time),
                lease_transitions=record.transitions,
            ),
        )

    def create(self, record: LeaseRecord) -> str:
        lease = self._call(lambda: self.api.create_namespaced_lease(self.namespace, self._body(record, None)))
        return str(lease.metadata.resource_version)

    def replace(self, record: LeaseRecord, version: str) -> str:
        body = self._body(record, version)
        lease = self._call(lambda: self.api.replace_namespaced_lease(self.name, self.namespace, body))
        return str(lease.metadata.resource_version)

    def _call(self, request: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return request()
        except ApiException as error:
            if error.status == 409:
                raise Conflict(f"lease {self.namespace}/{self.name} changed") from None
            raise OSError(f"lease {self.namespace}/{self.name}: {error.status} {error.reason}") from None


def _format(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if value else ""


def _parse(text: str) -> datetime | None:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) if text else None
