"""The simulated CoinGecko answers like the documented API: prices per id, unknown ids absent, a price that only
changes with a refresh, the Demo key checked, and 429 with Retry-After over the per-minute limit."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.helpers import wait_for
from tickpipe.sim.coingecko import CoinGeckoOptions, CoinGeckoSim

pytestmark = pytest.mark.unit
PRICE = (
    "/simple/price?ids=bitcoin,ethereum,no-such-coin&vs_currencies=usd&include_24hr_vol=true"
    "&include_last_updated_at=true"
)


def get(url: str, key: str | None = None) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, headers={"x-cg-demo-api-key": key} if key else {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the local simulator
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), dict(error.headers)


def test_known_ids_are_quoted_unknown_ones_are_absent_and_prices_change_only_on_refresh() -> None:
    with CoinGeckoSim(CoinGeckoOptions(refresh_seconds=0.5)) as sim:
        status, first, _ = get(sim.url + PRICE)
        _, again, _ = get(sim.url + PRICE)
        changed = wait_for(lambda: (a := get(sim.url + PRICE)[1]) != first and a, 10, "a refresh")
    assert status == 200
    assert set(first) == {"bitcoin", "ethereum"}
    assert set(first["bitcoin"]) == {"usd", "usd_24h_vol", "last_updated_at"}
    assert again == first, "between refreshes the same price and the same last_updated_at"
    assert changed["bitcoin"]["last_updated_at"] > first["bitcoin"]["last_updated_at"]


def test_the_demo_key_is_required_and_checked() -> None:
    with CoinGeckoSim(CoinGeckoOptions(demo_key="CG-test-key")) as sim:
        missing = get(sim.url + PRICE)
        wrong = get(sim.url + PRICE, key="CG-wrong")
        right = get(sim.url + PRICE, key="CG-test-key")
    assert (missing[0], missing[1]["status"]["error_code"]) == (401, 10002)
    assert (wrong[0], wrong[1]["status"]["error_code"]) == (401, 10011)
    assert right[0] == 200


def test_over_the_per_minute_limit_answers_429_with_retry_after_and_counts_every_call() -> None:
    with CoinGeckoSim(CoinGeckoOptions(calls_per_minute=5)) as sim:
        statuses = [get(sim.url + "/ping")[0] for _ in range(7)]
        status, body, headers = get(sim.url + "/ping")
        requests, refused = sim.requests, sim.refused
    assert statuses == [200] * 5 + [429] * 2
    assert status == 429
    assert body["status"]["error_code"] == 429
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert (requests, refused) == (8, 3)
