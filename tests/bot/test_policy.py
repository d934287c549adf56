"""Reply policy: addressed -> always; otherwise probability with a per-chat cooldown."""

from __future__ import annotations

import random

import pytest

from bot.policy import Decision, Incoming, ReplyPolicy

GROUP = -100


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(chat_id: int = GROUP, *, bot: bool = False, addressed: bool = False, muted=False):
    return Incoming(chat_id=chat_id, sender_is_bot=bot, addressed=addressed, muted=muted)


def test_addressed_always_answered_even_without_chance_or_during_cooldown() -> None:
    clock = Clock()
    policy = ReplyPolicy(1.0, 60, rng=random.Random(0), clock=clock)
    assert policy.decide(message()) is Decision.UNPROMPTED  # starts the cooldown
    assert policy.cooling_down(GROUP)
    assert policy.decide(message(addressed=True)) is Decision.PROMPTED
    never = ReplyPolicy(0.0, 60, rng=random.Random(0), clock=clock)
    assert all(never.decide(message(addressed=True)) is Decision.PROMPTED for _ in range(20))


def test_never_answers_bots_or_muted_chats() -> None:
    policy = ReplyPolicy(1.0, 0, rng=random.Random(0))
    assert policy.decide(message(bot=True, addressed=True)) is Decision.IGNORE
    assert policy.decide(message(bot=True)) is Decision.IGNORE
    assert policy.decide(message(muted=True, addressed=True)) is Decision.IGNORE
    assert not Decision.IGNORE and Decision.PROMPTED and Decision.UNPROMPTED


def test_zero_probability_never_chimes_in() -> None:
    policy = ReplyPolicy(0.0, 0, rng=random.Random(0))
    assert all(policy.decide(message()) is Decision.IGNORE for _ in range(1000))


def test_cooldown_allows_one_unprompted_reply_per_period_per_chat() -> None:
    clock = Clock()
    policy = ReplyPolicy(1.0, 60, rng=random.Random(0), clock=clock)
    assert policy.decide(message()) is Decision.UNPROMPTED
    clock.now += 59.9
    assert policy.decide(message()) is Decision.IGNORE
    assert policy.decide(message(chat_id=-200)) is Decision.UNPROMPTED  # other chats unaffected
    clock.now += 0.2
    assert policy.decide(message()) is Decision.UNPROMPTED


def test_prompted_replies_do_not_start_the_cooldown() -> None:
    policy = ReplyPolicy(1.0, 60, rng=random.Random(0), clock=Clock())
    assert policy.decide(message(addressed=True)) is Decision.PROMPTED
    assert not policy.cooling_down(GROUP)
    assert policy.decide(message()) is Decision.UNPROMPTED


def test_probability_is_respected() -> None:
    policy = ReplyPolicy(0.3, 0, rng=random.Random(1234), clock=Clock())
    hits = sum(policy.decide(message()) is Decision.UNPROMPTED for _ in range(4000))
    assert 0.27 < hits / 4000 < 0.33


def test_forget_ends_the_cooldown() -> None:
    policy = ReplyPolicy(1.0, 3600, rng=random.Random(0), clock=Clock())
    policy.decide(message())
    policy.forget(GROUP)
    assert policy.decide(message()) is Decision.UNPROMPTED


@pytest.mark.parametrize(("probability", "cooldown"), [(-0.1, 0), (1.1, 0), (0.5, -1)])
def test_rejects_nonsense(probability: float, cooldown: float) -> None:
    with pytest.raises(ValueError):
        ReplyPolicy(probability, cooldown)
