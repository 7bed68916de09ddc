"""The symbol rules, defined once per source (tickpipe.schema.SYMBOL_RULES) and applied the same by settings, alert
levels, ticks and the table's CHECK. (The JVM parser's copy is held to them by tests/ma_job/test_parse_tick.py.)"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REPO
from tickpipe.alerts.levels import parse_symbol
from tickpipe.config import load_settings
from tickpipe.errors import AlertLevelError, ConfigError
from tickpipe.schema import SYMBOL_SQL_PATTERN, InvalidTick, is_symbol, validate_tick

# Per source: symbols (as written in SYMBOLS) with their stored form, and what is not one of its symbols.
SOURCE_SYMBOLS = {
    "coingecko": [
        ("bitcoin/usd", "bitcoin/usd"),
        ("Ethereum/USD", "ethereum/usd"),
        ("usd-coin/eur", "usd-coin/eur"),
        ("1inch/btc", "1inch/btc"),
        ("wrapped-bitcoin/sats", "wrapped-bitcoin/sats"),
    ],
    "yahoo": [
        ("AAPL", "AAPL"),
        ("btc-usd", "BTC-USD"),
        ("^GSPC", "^GSPC"),
        ("EURUSD=X", "EURUSD=X"),
        ("BRK-B", "BRK-B"),
        ("0700.HK", "0700.HK"),
        ("ES=F", "ES=F"),
        ("F", "F"),
        ("X" * 20, "X" * 20),
    ],
}
NOT_SOURCE_SYMBOLS = {
    "coingecko": [
        "bitcoin",
        "BTCUSDT",
        "bitcoin/",
        "/usd",
        "bitcoin/usd/eur",
        "bit coin/usd",
        "-bitcoin/usd",
        "bitcoin/u",
        "bitcoin/usd1",
        "bitcoin_cash/usd",
        "bitcöin/usd",
        "bitcoin/usd ",
        "a" * 101 + "/usd",
    ],
    "yahoo": [
        "",
        "X" * 21,
        "^",
        "^^GSPC",
        "AAPL.",
        ".HK",
        "BTC--USD",
        "BTC USD",
        "AAPL$",
        "bitcoin/usd",
        "ÄAPL",
        "\uff21APL",
        "=X",
        "AAPL\n",
    ],
}

pytestmark = pytest.mark.unit

SYMBOLS = ["BTCUSDT", "btcusdt", "1000SATSUSDT", "AB", "X" * 20]
NOT_SYMBOLS = [
    "",
    "A",
    "X" * 21,
    "BTC-USDT",
    "BTC USDT",
    "BTCÜSDT",
    "\uff22\uff34\uff23",  # fullwidth BTC: str.isalnum() says yes
    "١٢٣٤",
    "比特币",
    "BTC\tUSDT",
    "ǅǅ",
]


@pytest.mark.parametrize("text", SYMBOLS)
def test_letters_and_digits_are_a_symbol_everywhere(text: str) -> None:
    assert is_symbol(text)
    assert load_settings(symbols=text).symbols == (text.lower(),)
    assert parse_symbol(text) == text.upper()
    assert validate_tick(text, 1, 1, 1, "binance").symbol == text.upper()


@pytest.mark.parametrize("text", NOT_SYMBOLS)
def test_anything_else_is_refused_everywhere(text: str) -> None:
    assert not is_symbol(text)
    if text and text == text.strip():  # SYMBOLS is a comma-separated list: blanks around an item are not kept
        with pytest.raises(ConfigError, match="SYMBOLS"):
            load_settings(symbols=f"btcusdt,{text}")
    with pytest.raises(AlertLevelError):
        parse_symbol(text)
    with pytest.raises(InvalidTick, match="invalid symbol"):
        validate_tick(text, 1, 1, 1, "binance")


def test_the_tables_check_states_the_same_rule() -> None:
    migration = (REPO / "storage" / "migrations" / "0003_price_alert_levels.sql").read_text()
    assert f"CHECK (symbol ~ '{SYMBOL_SQL_PATTERN}')" in migration


@given(st.text(max_size=24))
def test_the_checks_pattern_accepts_exactly_the_stored_form_of_a_symbol(text: str) -> None:
    stored = re.fullmatch(SYMBOL_SQL_PATTERN.strip("^$"), text) is not None
    assert stored == (is_symbol(text) and text == text.upper())


@pytest.mark.parametrize(
    ("source", "text", "stored"), [(s, t, st) for s, pairs in SOURCE_SYMBOLS.items() for t, st in pairs]
)
def test_each_source_has_its_own_symbols_stored_in_its_case(source: str, text: str, stored: str) -> None:
    assert is_symbol(text, source)
    assert validate_tick(text, 1, 1, 1, source).symbol == stored
    assert load_settings(source=source, symbols=text).symbols == (stored,)


@pytest.mark.parametrize(("source", "text"), [(s, t) for s, texts in NOT_SOURCE_SYMBOLS.items() for t in texts])
def test_what_is_not_a_sources_symbol_is_refused_by_ticks_and_settings(source: str, text: str) -> None:
    assert not is_symbol(text, source)
    with pytest.raises(InvalidTick, match="invalid symbol"):
        validate_tick(text, 1, 1, 1, source)
    if text and text == text.strip() and "," not in text:
        with pytest.raises(ConfigError, match=f"SYMBOLS: not a {source} symbol"):
            load_settings(source=source, symbols=text)


def test_a_binance_symbol_is_not_a_yahoo_one_by_default_and_the_reverse() -> None:
    assert is_symbol("BTCUSDT") and not is_symbol("BTC-USD")
    assert is_symbol("BTC-USD", "yahoo") and not is_symbol("BTC-USD", "coingecko")


def test_an_unknown_source_is_rejected_with_a_reason() -> None:
    assert not is_symbol("BTCUSDT", "kraken")
    with pytest.raises(InvalidTick, match="unknown source: 'kraken' \\(expected binance, coingecko, yahoo\\)"):
        validate_tick("BTCUSDT", 1, 1, 1, "kraken")
    with pytest.raises(ConfigError, match="invalid SOURCE"):
        load_settings(source="kraken")


def test_unset_symbols_are_the_sources_own_defaults() -> None:
    assert load_settings(source="coingecko").symbols[0] == "bitcoin/usd"
    assert "^GSPC" in load_settings(source="yahoo").symbols
    with pytest.raises(ConfigError, match="SOURCE=binance only"):
        load_settings(source="yahoo", symbols="all-usdt")
