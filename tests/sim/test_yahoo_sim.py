"""The simulated Yahoo streamer: subscribe, protobuf frames decoded with the streamer's schema, heartbeats that change
nothing, stocks quiet while their market is closed and crypto trading on."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from tickpipe.sim.yahoo import YahooOptions, YahooSim
from tickpipe.yahoo_pricing import InvalidFrame, decode_frame, exact_price

pytestmark = pytest.mark.unit


@pytest.fixture
def sim() -> Iterator[YahooSim]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    exchange = YahooSim(YahooOptions(rate=20.0))
    asyncio.run_coroutine_threadsafe(exchange.start(), loop).result(10)
    yield exchange
    asyncio.run_coroutine_threadsafe(exchange.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def frames(ws: websocket.WebSocket, count: int) -> list[Any]:
    return [decode_frame(ws.recv()) for _ in range(count)]


def test_subscribed_symbols_stream_pricing_data_frames(sim: YahooSim) -> None:
    ws = websocket.create_connection(sim.url, timeout=10)
    try:
        ws.send(json.dumps({"subscribe": ["AAPL", "BTC-USD"]}))
        got = frames(ws, 10)
        ws.send(json.dumps({"subscribe": ["AAPL", "BTC-USD"]}))  # the heartbeat: same set, nothing doubled
        after = frames(ws, 10)
    finally:
        ws.close()
    assert {m.id for m in got} == {"AAPL", "BTC-USD"}
    assert all(m.time > 1_700_000_000_000 and m.price > 0 and m.market_hours == 1 for m in got)
    assert len([m for m in after if m.id == "AAPL"]) == 5
    assert float(exact_price(got[0].price)) == pytest.approx(got[0].price, rel=1e-7)


def test_a_closed_market_silences_stocks_but_not_crypto(sim: YahooSim) -> None:
    with urllib.request.urlopen(sim.url.replace("ws://", "http://").split("?")[0] + "sim/market?open=0", timeout=10):  # noqa: S310
        pass
    ws = websocket.create_connection(sim.url, timeout=10)
    try:
        ws.send(json.dumps({"subscribe": ["AAPL", "BTC-USD"]}))
        got = frames(ws, 10)
    finally:
        ws.close()
    assert {m.id for m in got} == {"BTC-USD"}


def test_decoding_rejects_what_is_not_a_pricing_frame_with_a_reason() -> None:
    for frame, reason in [
        ("nope", "not JSON"),
        ('{"type": "pricing"}', "no base64"),
        ('{"message": "%%%"}', "not base64"),
        ('{"message": "////"}', "not a PricingData"),
    ]:
        with pytest.raises(InvalidFrame, match=reason):
            decode_frame(frame)


def test_exact_price_is_the_float32_written_shortest() -> None:
    assert exact_price(189.95) == "189.95"
    assert exact_price(0.1) == "0.1"
    assert exact_price(97000.5) == "97000.5"
    assert exact_price(97000.123) == "97000.125"  # the float32 nearest to what was meant, not a float64's digits
