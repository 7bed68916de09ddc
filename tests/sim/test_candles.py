"""The simulator's 1m candles: built from its own trades, every minute present, the same on the stream and REST."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from typing import Any

import pandas as pd
import pytest
import websocket

from tests.helpers import wait_for
from tickpipe.sim.candles import MINUTE_MS, CandleBook
from tickpipe.sim.server import SimOptions, SimThread

pytestmark = pytest.mark.unit
START = 1_764_000_000_000 - 1_764_000_000_000 % MINUTE_MS


def test_candles_equal_a_pandas_resample_of_the_trades_with_flat_candles_for_quiet_minutes() -> None:
    rng = random.Random(3)
    trades, now = [], START
    for i in range(400):
        now += rng.choice([50, 400, 1500, 95_000]) if i % 50 else 200_000  # some minutes without a trade
        trades.append((now, rng.uniform(90, 110), rng.uniform(0.1, 5.0)))
    book = CandleBook("BTCUSDT")
    for trade_id, (ms, price, quantity) in enumerate(trades):
        book.trade(ms, price, quantity, trade_id)
    candles = book.klines(None, None, 1000, trades[-1][0])
    actual = pd.DataFrame(
        [(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.trades) for c in candles],
        columns=["t", "open", "high", "low", "close", "volume", "trades"],
    ).set_index("t")

    frame = pd.DataFrame(trades, columns=["ms", "price", "qty"])
    frame.index = pd.to_datetime(frame["ms"], unit="ms")
    grouped = frame.resample("1min")
    expected = grouped["price"].ohlc()
    expected["volume"] = grouped["qty"].sum()
    expected["trades"] = grouped["price"].count()
    quiet = expected["close"].isna()
    expected["close"] = expected["close"].ffill()  # a minute without trades: flat at the previous close
    for column in ("open", "high", "low"):
        expected.loc[quiet, column] = expected.loc[quiet, "close"]
    expected.index = expected.index.astype("int64") // 1_000_000
    expected.index.name = "t"

    assert quiet.sum() > 5, "the series must have minutes without trades"
    assert list(actual.index) == list(range(int(expected.index[0]), int(expected.index[-1]) + 1, MINUTE_MS))
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, check_names=False, rtol=1e-12)


def get(url: str) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local simulator
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), dict(error.headers)


def test_streamed_closed_candles_equal_the_rest_klines_of_the_same_minutes() -> None:
    # 600x clock: a candle minute lasts 0.1 s of real time.
    options = SimOptions(symbols=["btcusdt"], rate=100.0, clock_speed=600.0, kline_update_interval=0.05)
    with SimThread(options) as exchange:
        ws = websocket.create_connection(f"{exchange.url}/stream?streams=btcusdt@kline_1m", timeout=10)
        streamed: list[dict[str, Any]] = []
        opened = 0
        try:
            while len(streamed) < 8:
                message = json.loads(ws.recv())
                assert message["stream"] == "btcusdt@kline_1m"
                kline = message["data"]["k"]
                if kline["x"]:
                    streamed.append(kline)
                else:
                    opened += 1
        finally:
            ws.close()
        status, rows, headers = get(
            f"{exchange.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m"
            f"&startTime={streamed[0]['t']}&endTime={streamed[-1]['t']}&limit=1000"
        )
    assert status == 200
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) >= 2
    assert opened > 0, "open candles are pushed between the closed ones"
    rest = [
        {"t": r[0], "o": r[1], "h": r[2], "l": r[3], "c": r[4], "v": r[5], "T": r[6], "q": r[7], "n": r[8]}
        for r in rows
    ]
    assert rest == [{key: kline[key] for key in rest[0]} for kline in streamed]
    assert [k["t"] for k in streamed] == list(range(streamed[0]["t"], streamed[-1]["t"] + 1, MINUTE_MS))


def test_rest_errors_and_rate_limits_answer_like_binance() -> None:
    with SimThread(SimOptions(symbols=["btcusdt"], rest_weight_limit=10)) as exchange:
        base = f"{exchange.rest_url}/api/v3"
        assert get(f"{base}/klines?symbol=NOPEUSDT&interval=1m")[:2] == (400, {"code": -1121, "msg": "Invalid symbol."})
        assert get(f"{base}/klines?symbol=BTCUSDT&interval=1m&limit=5000")[0] == 400
        wait_for(lambda: get(f"{base}/klines?symbol=BTCUSDT&interval=1m")[0] == 429, 10, "a 429 once over the weight")
        status, body, headers = get(f"{base}/time")
        assert status == 429
        assert body["code"] == -1003
        assert 1 <= int(headers["Retry-After"]) <= 60
        statuses = [get(f"{base}/time")[0] for _ in range(5)]
    assert statuses[-1] == 418, "a client that keeps calling while limited is banned"
