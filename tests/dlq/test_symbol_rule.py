"""The symbol rule, defined once (tickpipe.schema.is_symbol) and applied the same by settings, alert levels, ticks
and the table's CHECK. (The JVM parser's copy is held to it by tests/ma_job/test_parse_tick.py.)"""

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
    assert validate_tick(text, 1, 1, 1, "x").symbol == text.upper()


@pytest.mark.parametrize("text", NOT_SYMBOLS)
def test_anything_else_is_refused_everywhere(text: str) -> None:
    assert not is_symbol(text)
    if text and text == text.strip():  # SYMBOLS is a comma-separated list: blanks around an item are not kept
        with pytest.raises(ConfigError, match="SYMBOLS"):
            load_settings(symbols=f"btcusdt,{text}")
    with pytest.raises(AlertLevelError):
        parse_symbol(text)
    with pytest.raises(InvalidTick, match="invalid symbol"):
        validate_tick(text, 1, 1, 1, "x")


def test_the_tables_check_states_the_same_rule() -> None:
    migration = (REPO / "storage" / "migrations" / "0003_price_alert_levels.sql").read_text()
    assert f"CHECK (symbol ~ '{SYMBOL_SQL_PATTERN}')" in migration


@given(st.text(max_size=24))
def test_the_checks_pattern_accepts_exactly_the_stored_form_of_a_symbol(text: str) -> None:
    stored = re.fullmatch(SYMBOL_SQL_PATTERN.strip("^$"), text) is not None
    assert stored == (is_symbol(text) and text == text.upper())
