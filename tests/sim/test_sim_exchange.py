"""The simulated exchange speaks Binance's protocol: what a client sees on raw and combined streams."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import websocket

from tickpipe.sim.server import SimExchange, SimOptions, SimThread

pytestmark = pytest.mark.unit


@pytest.fixture
def sim() -> Iterator[tuple[SimThread, SimExchange]]:
    thread = SimThread(SimOptions(symbols=["btcusdt"], rate=20.0))
    with thread as exchange:
        yield thread, exchange


def next_event(ws: websocket.WebSocket, kind: str) -> dict[str, object]:
    """The next message whose event type (unwrapped or not) is `kind`, as it arrived."""
    while True:
        message = json.loads(ws.recv())
        data = message.get("data", message)
        if data.get("e") == kind:
            return dict(message)


@pytest.mark.parametrize(("path", "wrapped"), [("/stream?streams=btcusdt@ticker", True), ("/ws/btcusdt@ticker", False)])
def test_the_shutdown_notice_comes_wrapped_as_stream_server_shutdown_only_on_combined_streams(
    sim: tuple[SimThread, SimExchange], path: str, wrapped: bool
) -> None:
    thread, exchange = sim
    ws = websocket.create_connection(f"{exchange.url}{path}", timeout=10)
    try:
        next_event(ws, "24hrTicker")
        thread.call(exchange.announce_shutdown())
        notice = next_event(ws, "serverShutdown")
    finally:
        ws.close()
    if wrapped:
        assert notice["stream"] == "!serverShutdown"
        assert set(notice) == {"stream", "data"}
    else:
        assert "stream" not in notice
        assert isinstance(notice["E"], int)


@pytest.mark.parametrize("status", [451, 403])
def test_a_refusing_exchange_answers_the_handshake_with_binance_s_http_status(status: int) -> None:
    with (
        SimThread(SimOptions(symbols=["btcusdt"], refuse_status=status)) as exchange,
        pytest.raises(websocket.WebSocketBadStatusException) as refused,
    ):
        websocket.create_connection(f"{exchange.url}/stream?streams=btcusdt@ticker", timeout=10)
    assert refused.value.status_code == status
    assert "msg" in json.loads(refused.value.resp_body)


def test_exchange_info_lists_hundreds_of_symbols_and_follows_listings_and_delistings() -> None:
    import urllib.request

    symbols = [f"SYM{i:04d}USDT" for i in range(600)]
    with SimThread(SimOptions(symbols=symbols, rate=2.0)) as exchange:

        def info() -> dict[str, str]:
            url = f"{exchange.rest_url}/api/v3/exchangeInfo"
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local simulator
                return {s["symbol"]: s["status"] for s in json.load(response)["symbols"]}

        def control(action: str, symbol: str) -> None:
            with urllib.request.urlopen(f"{exchange.rest_url}/sim/{action}?symbol={symbol}", timeout=10):  # noqa: S310
                pass

        assert len(info()) == 600
        assert set(info().values()) == {"TRADING"}
        control("list", "NEWUSDT")
        control("delist", "SYM0001USDT")
        listed = info()
        ws = websocket.create_connection(
            f"{exchange.url}/stream?streams=newusdt@ticker/sym0001usdt@ticker/sym0002usdt@ticker", timeout=10
        )
        try:
            seen = {json.loads(ws.recv())["data"]["s"] for _ in range(20)}
        finally:
            ws.close()
    assert listed["NEWUSDT"] == "TRADING"
    assert listed["SYM0001USDT"] == "BREAK"
    assert seen == {"NEWUSDT", "SYM0002USDT"}, "a delisted symbol stops trading, a listed one starts"
