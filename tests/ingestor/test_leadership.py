"""Lease leadership of ingestor replicas: one leader, standbys that take over only when the lease really expired,
judged on their own monotonic clocks; against the local file backend and, through the real kubernetes client, a
served API that keeps state and answers conflicts like the real one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ingestor.fake_kube_api import FakeKubeApi
from tickpipe.ingestor.leadership import Elector, FileLeaseStore, KubernetesLeaseStore, LeaseStore

pytestmark = pytest.mark.unit
Stores = tuple[LeaseStore, LeaseStore, FakeKubeApi | None]


class Clock:
    """A candidate's own clocks: monotonic seconds, and a wall clock that can be made to jump."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_offset_hours = 0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> str:
        return f"2026-12-01T{(10 + self.wall_offset_hours) % 24:02d}:00:{self.now % 60:09.6f}Z"


@pytest.fixture(params=["file", "kubernetes"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """Two handles on one lease, as two replicas have them."""
    if request.param == "file":
        yield FileLeaseStore(tmp_path / "lease.json"), FileLeaseStore(tmp_path / "lease.json"), None
        return
    from kubernetes import client

    with FakeKubeApi() as api:
        handles = []
        for _ in range(2):
            configuration = client.Configuration()
            configuration.host = api.url
            coordination = client.CoordinationV1Api(client.ApiClient(configuration))
            handles.append(KubernetesLeaseStore("tickpipe-ingestor", "tickpipe", api=coordination))
        yield handles[0], handles[1], api


def candidates(stores: tuple[LeaseStore, LeaseStore, object]) -> tuple[Elector, Clock, Elector, Clock]:
    a_clock, b_clock = Clock(), Clock()
    a = Elector(stores[0], "replica-a", monotonic=a_clock.monotonic, wall_clock=a_clock.wall)
    b = Elector(stores[1], "replica-b", monotonic=b_clock.monotonic, wall_clock=b_clock.wall)
    return a, a_clock, b, b_clock


def advance(seconds: float, *clocks: Clock) -> None:
    for clock in clocks:
        clock.now += seconds


def test_one_leader_and_a_standby(stores: Stores) -> None:
    a, a_clock, b, b_clock = candidates(stores)
    assert a.step()
    assert not b.step()
    for _ in range(20):  # a renews every 2 s for 40 s: b never takes over
        advance(2, a_clock, b_clock)
        assert a.step()
        assert not b.step()
    assert b.holder == "replica-a"


def test_a_dead_leader_is_replaced_once_its_lease_expired_on_the_standby_s_clock(
    stores: Stores,
) -> None:
    a, a_clock, b, b_clock = candidates(stores)
    a.step()
    b.step()
    advance(14, b_clock)  # a was killed -9: no more renewals; 14 s < the 15 s lease
    assert not b.step()
    advance(2, b_clock)
    assert b.step()
    assert b.leading
    advance(2, a_clock)
    assert not a.step(), "a replica that comes back finds the lease taken and stays a standby"


def test_a_standby_whose_wall_clock_jumps_an_hour_does_not_steal_a_live_lease(
    stores: Stores,
) -> None:
    a, a_clock, b, b_clock = candidates(stores)
    a.step()
    b.step()
    b_clock.wall_offset_hours = 1
    a_clock.wall_offset_hours = -3  # and the leader's own renewTime is hours off
    for _ in range(10):
        advance(2, a_clock, b_clock)
        assert a.step()
        assert not b.step()


def test_a_leader_that_cannot_renew_steps_down_before_its_lease_expires(stores: Stores) -> None:
    a, a_clock, b, b_clock = candidates(stores)
    a.step()
    b.step()
    api = stores[2]
    if api is not None:
        api.down = True
    else:
        a.store = _Unreachable()
    advance(8, a_clock)
    assert a.step(), "within the renew deadline it still leads"
    advance(3, a_clock)
    assert not a.step(), "past the renew deadline (10 s) it must stop producing"
    if api is not None:
        api.down = False
    advance(16, b_clock)
    assert b.step(), "and the standby takes over once the lease expired"


def test_a_released_lease_is_taken_over_at_the_next_step(
    stores: Stores,
) -> None:
    a, _, b, _ = candidates(stores)
    a.step()
    assert not b.step()
    a.release()
    assert not a.leading
    assert b.step()


def test_two_candidates_racing_for_the_same_version_only_one_wins(stores: Stores) -> None:
    a, _, b, _ = candidates(stores)
    a.step()
    a.release()
    first, second = stores[0].get(), stores[1].get()
    assert first is not None
    assert first == second
    won = [a.step(), b.step()]
    assert won.count(True) == 1
    record = stores[0].get()
    assert record is not None
    assert record[0].transitions >= 1


class _Unreachable:
    def get(self) -> None:
        raise OSError("connection refused")

    def create(self, record: object) -> str:
        raise OSError("connection refused")

    def replace(self, record: object, version: str) -> str:
        raise OSError("connection refused")
