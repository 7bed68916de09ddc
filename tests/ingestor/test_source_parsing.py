"""The CoinGecko and Yahoo sources' pure parts: the budget → poll interval, reading a `/simple/price` answer, and
a streamer frame → a tick."""

from __future__ import annotations

import base64
import json

import orjson
import pytest

from tickpipe.ingestor.coingecko import MONTH_SECONDS, Pair, pairs_of, poll_interval, price_url, read_answer
from tickpipe.ingestor.yahoo import subscribe_message, to_tick
from tickpipe.schema import InvalidTick, Tick
from tickpipe.yahoo_pricing import PricingData, encode_frame

pytestmark = pytest.mark.unit


def test_the_demo_plans_monthly_budget_binds_a_poller_running_all_month() -> None:
    interval = poll_interval(calls_per_minute=100, monthly_calls=10_000)
    assert interval == pytest.approx(31 * 86_400 / 10_000)  # ~268 s, not 0.6 s
    assert 31 * 86_400 / interval == pytest.approx(10_000), "a 31-day month of polls fits the monthly budget"


def test_without_a_monthly_cap_the_per_minute_limit_sets_the_interval() -> None:
    assert poll_interval(calls_per_minute=100, monthly_calls=0) == pytest.approx(0.6)
    assert poll_interval(calls_per_minute=500, monthly_calls=500_000) == pytest.approx(MONTH_SECONDS / 500_000)


def test_a_share_of_the_budget_leaves_room_for_retries() -> None:
    full = poll_interval(100, 10_000)
    assert poll_interval(100, 10_000, share=0.9) == pytest.approx(full / 0.9)
    assert 31 * 86_400 / poll_interval(100, 10_000, share=0.9) == pytest.approx(9_000)


def test_one_request_asks_every_id_and_currency_once() -> None:
    pairs = pairs_of(["bitcoin/usd", "bitcoin/eur", "ethereum/usd"])
    assert pairs == [Pair("bitcoin", "usd"), Pair("bitcoin", "eur"), Pair("ethereum", "usd")]
    url = price_url("https://api.coingecko.com/api/v3", pairs)
    assert url == (
        "https://api.coingecko.com/api/v3/simple/price?ids=bitcoin,ethereum&vs_currencies=usd,eur"
        "&include_24hr_vol=true&include_last_updated_at=true"
    )


def test_an_answer_gives_quotes_and_names_unknown_ids_and_currencies() -> None:
    body = orjson.dumps(
        {
            "bitcoin": {"usd": 97000.12, "usd_24h_vol": 3.5e10, "last_updated_at": 1_764_590_400},
            "ethereum": {"usd": 3600.5, "usd_24h_vol": 1.2e10, "last_updated_at": 1_764_590_390},
        }
    )
    pairs = pairs_of(["bitcoin/usd", "bitcoin/eur", "ethereum/usd", "no-such-coin/usd"])
    answer = read_answer(body, pairs)
    assert [(p.symbol, t, price, volume) for p, t, price, volume, _ in answer.quotes] == [
        ("bitcoin/usd", 1_764_590_400, 97000.12, 3.5e10),
        ("ethereum/usd", 1_764_590_390, 3600.5, 1.2e10),
    ]
    assert answer.unknown_ids == ["no-such-coin"]
    assert answer.unquoted == ["bitcoin/eur"]
    assert answer.rejected == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>busy</html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"bitcoin": "97000"}', "quote of bitcoin is not a JSON object"),
        (b'{"bitcoin": {"usd": 1, "last_updated_at": 1}}', "missing fields: usd_24h_vol"),
        (b'{"bitcoin": {"usd": 1, "usd_24h_vol": 1, "last_updated_at": "soon"}}', "invalid last_updated_at"),
    ],
)
def test_what_is_not_a_quote_is_rejected_with_a_reason(body: bytes, reason: str) -> None:
    answer = read_answer(body, pairs_of(["bitcoin/usd"]))
    assert answer.quotes == []
    assert len(answer.rejected) == 1 and answer.rejected[0][1].startswith(reason)


def test_a_frame_becomes_a_tick_with_the_float32_price_written_shortest() -> None:
    frame = encode_frame(id="AAPL", price=189.95, time=1_764_590_400_123, day_volume=1_234_567, market_hours=1)
    assert to_tick(frame) == Tick("AAPL", 1_764_590_400_123, 189.95, 1_234_567.0, "yahoo")


def test_an_index_and_a_currency_pair_are_yahoo_symbols() -> None:
    assert to_tick(encode_frame(id="^GSPC", price=6000.25, time=1)).symbol == "^GSPC"
    assert to_tick(encode_frame(id="EURUSD=X", price=1.0512, time=1)).price == 1.0512


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ("not json", "not JSON"),
        ('{"type": "pricing", "message": "bm90IHByb3RvYnVm!"}', "'message' is not base64"),
        ('{"type": "pricing", "message": "////"}', "'message' is not a PricingData"),
        (encode_frame(id="AAPL", price=189.95), "invalid event time"),
        (encode_frame(price=189.95, time=1), "invalid symbol"),
        (encode_frame(id="AAPL", time=1), "price must be positive"),
        (encode_frame(id="BTC/USD", price=1, time=1), "invalid symbol"),
    ],
)
def test_what_is_not_a_pricing_frame_is_rejected_with_a_reason(frame: str, reason: str) -> None:
    with pytest.raises(InvalidTick, match=reason.replace("(", "\\(")):
        to_tick(frame)


def test_the_subscription_names_every_symbol() -> None:
    assert json.loads(subscribe_message(["AAPL", "^GSPC"])) == {"subscribe": ["AAPL", "^GSPC"]}


def test_frames_decode_with_the_streamers_schema() -> None:
    message = PricingData(id="BTC-USD", price=97000.5, time=5)
    frame = json.dumps({"type": "pricing", "message": base64.b64encode(message.SerializeToString()).decode()})
    assert to_tick(frame).symbol == "BTC-USD"
