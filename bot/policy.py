"""When the bot speaks up: a pure decision, so it is testable without Telegram or a model.

The bot answers whenever it is addressed (mentioned, or replied to). Otherwise it chimes in
now and then, with probability ``REPLY_PROBABILITY``, but at most once per ``REPLY_COOLDOWN``
seconds per chat so a busy group is not flooded. It never answers itself or another bot (two
bots answering each other would loop forever), and a muted chat hears nothing from it.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass


class Decision(enum.Enum):
    """Whether to reply, and why (prompted replies do not use up the cooldown)."""

    IGNORE = "ignore"
    PROMPTED = "prompted"  # mentioned or replied to
    UNPROMPTED = "unprompted"  # the dice said so

    def __bool__(self) -> bool:
        return self is not Decision.IGNORE


@dataclass(frozen=True, slots=True)
class Incoming:
    """What the policy needs to know about one message."""

    chat_id: int
    sender_is_bot: bool  # this bot or any other bot
    addressed: bool  # mentions the bot or replies to one of its messages
    muted: bool = False


class ReplyPolicy:
    """Decides per message; remembers the last unprompted reply time of each chat."""

    def __init__(
        self,
        probability: float,
        cooldown_s: float,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.probability = probability
        self.cooldown_s = cooldown_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._last_unprompted: dict[int, float] = {}

    def decide(self, message: Incoming) -> Decision:
        """Reply to ``message``? An unprompted "yes" starts the chat's cooldown at once.

        The cooldown starts when the decision is made, not when the reply is sent, so a burst
        of messages arriving while a reply is being generated cannot win a second one.
        """
        if message.sender_is_bot or message.muted:
            return Decision.IGNORE
        if message.addressed:
            return Decision.PROMPTED
        if self.probability <= 0.0 or self.cooling_down(message.chat_id):
            return Decision.IGNORE
        if self._rng.random() >= self.probability:
            return Decision.IGNORE
        self._last_unprompted[message.chat_id] = self._clock()
        return Decision.UNPROMPTED

    def cooling_down(self, chat_id: int) -> bool:
        """True while the chat's last unprompted reply is younger than the cooldown."""
        last = self._last_unprompted.get(chat_id)
        return last is not None and self._clock() - last < self.cooldown_s

    def forget(self, chat_id: int) -> None:
        """Drop a chat's cooldown (after /forget, or an unprompted reply that was not sent)."""
        self._last_unprompted.pop(chat_id, None)
