"""Small persistent key/value state of the bot (e.g. the last retraining run reported).

Values are JSON. Functions take a session and never commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from storage.models import BotState


def get_state(session: Session, key: str) -> Any | None:
    """The value stored under ``key``, or None when there is none."""
    state = session.get(BotState, key)
    return None if state is None else state.value


def set_state(session: Session, key: str, value: Any) -> None:
    """Store ``value`` (JSON) under ``key``, replacing any earlier value."""
    state = session.get(BotState, key)
    if state is None:
        session.add(BotState(key=key, value=value))
    else:
        state.value = value
    session.flush()
