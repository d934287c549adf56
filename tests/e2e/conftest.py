"""Fixtures every end-to-end test shares: a fake Bot API server on 127.0.0.1 per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.fake_telegram import FakeTelegram


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    """A fresh fake Telegram for one test: no state leaks from one test into the next."""
    with FakeTelegram() as server:
        yield server
