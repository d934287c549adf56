"""Best of k: with REPLY_CANDIDATES > 1 the bot sends the best-scored acceptable reply."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.best_of import (
    ECHO_PENALTY,
    LOOP_PENALTY,
    VOICE_WEIGHT,
    Candidate,
    Scorer,
    rank,
    score_candidate,
)
from bot.replies import Reply
from bot.service import FriendBot
from tests.bot.scripted_engine import ScriptedEngine, served
from tests.bot.test_service import ALICE, BOB, CAROL, GROUP, make_settings, say
from training.model.rerank import FEEDBACK_WEIGHT

OUTPUTS = ["Bob: sounds good", "Alice: me too", "Bob: see you at ten"]


def test_rank_orders_by_score_and_keeps_sampling_order_on_ties() -> None:
    cands = [Candidate("a", -2.0), Candidate("b", -1.0), Candidate("c", -2.0)]
    assert rank(cands) == ["b", "a", "c"]


def test_loops_and_echoes_lose_to_a_less_likely_clean_reply() -> None:
    context = ("Bob: anyone up for climbing?",)
    looping = Candidate("Bob: ha ha ha ha ha ha ha ha ha", -0.5, context)
    echo = Candidate("Alice: anyone up for climbing?", -0.5, context)
    clean = Candidate("Alice: count me in", -3.0, context)
    assert rank([looping, echo, clean])[0] == clean.text
    assert score_candidate(echo) == pytest.approx(-0.5 - ECHO_PENALTY)


def test_voice_adds_the_persona_probability() -> None:
    cand = Candidate("Bob: yo", -1.0, persona="Bob")
    assert score_candidate(cand, voice=lambda text, who: 0.75 if who == "Bob" else 0.0) == (
        pytest.approx(-1.0 + 0.75 * VOICE_WEIGHT)
    )
    # the voice never outweighs a loop or an echo
    assert min(LOOP_PENALTY, ECHO_PENALTY) > VOICE_WEIGHT + FEEDBACK_WEIGHT


def _prefer(text_fragment: str) -> tuple[Scorer, list[Candidate]]:
    seen: list[Candidate] = []

    def scorer(c: Candidate) -> float:
        seen.append(c)
        return 1.0 if text_fragment in c.text else 0.0

    return scorer, seen


@pytest.fixture
def engine() -> ScriptedEngine:
    return ScriptedEngine(OUTPUTS)


def _bot(tmp_path: Path, engine: ScriptedEngine, k: int, scorer: Scorer) -> FriendBot:
    service = FriendBot(
        make_settings(tmp_path, reply_candidates=k), loader=served(engine), scorer=scorer
    )
    service.start()
    return service


async def test_with_k_candidates_the_best_scored_reply_is_sent(
    tmp_path: Path, engine: ScriptedEngine
) -> None:
    scorer, seen = _prefer("see you")
    bot = _bot(tmp_path, engine, 3, scorer)
    try:
        say(bot, BOB, "morning")
        say(bot, ALICE, "hi")
        say(bot, CAROL, "anyone up for climbing?")
        reply = await bot.reply_in_character(GROUP, "Carol")
    finally:
        bot.stop()
    assert reply == Reply("Bob", "see you at ten")  # not the first sample, the best one
    assert [c.text for c in seen] == OUTPUTS  # all k were scored, with the chat as context
    assert seen[0].context[-1] == "Carol: anyone up for climbing?"
    assert engine.calls[0]["num_return_sequences"] == 3
    assert engine.calls[0]["no_repeat_ngram_size"] == 3


async def test_an_unacceptable_best_falls_back_to_the_next_best(
    tmp_path: Path, engine: ScriptedEngine
) -> None:
    scorer, _ = _prefer("see you")  # Bob's reply scores best, but Bob is the asker
    bot = _bot(tmp_path, engine, 3, scorer)
    try:
        say(bot, ALICE, "hi")
        say(bot, BOB, "anyone up for climbing?")
        reply = await bot.reply_in_character(GROUP, "Bob")
    finally:
        bot.stop()
    assert reply == Reply("Alice", "me too")


async def test_one_candidate_is_the_plain_sample_unscored(
    tmp_path: Path, engine: ScriptedEngine
) -> None:
    scorer, seen = _prefer("see you")
    bot = _bot(tmp_path, engine, 1, scorer)
    try:
        say(bot, BOB, "morning")
        say(bot, ALICE, "hi")
        say(bot, CAROL, "anyone up for climbing?")
        reply = await bot.reply_in_character(GROUP, "Carol")
    finally:
        bot.stop()
    assert reply == Reply("Bob", "sounds good")  # the first sample, as before best-of-k
    assert seen == []
    assert engine.calls[0]["num_return_sequences"] == 1
