"""The bot speaks as the friend its model's next-speaker scorer picks (training.model.
next_speaker), never as someone who opted out or the asker; without a usable scorer the model
picks, as before."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bot.replies import Reply
from bot.service import FriendBot
from bot.serving import ServedModels
from tests.bot.scripted_engine import ScriptedEngine, served
from tests.bot.test_service import ALICE, BOB, CAROL, GROUP, make_settings, say
from training.model import next_speaker


@pytest.fixture(scope="module")
def scorer() -> next_speaker.NextSpeaker:
    """Carol always answers Alice; Bob speaks most otherwise."""
    rng = random.Random(0)
    history = ["Bob: hi"]
    pairs = []
    for _ in range(400):
        last = history[-1]
        sender = "Carol" if last.startswith("Alice:") else rng.choice(["Alice", "Bob", "Bob"])
        line = f"{sender}: {rng.choice(['ok', 'lunch?', 'sure', 'no'])}"
        pairs.append(("\n".join(history[-4:]), line))
        history.append(line)
    fitted = next_speaker.fit(pairs)
    assert fitted is not None
    return fitted


def scored_engine(scorer: next_speaker.NextSpeaker, model_dir: Path) -> ScriptedEngine:
    """A scripted chat model that names Bob on the free prompt, with the scorer saved in its
    model directory and Carol among the speakers it was trained on."""
    engine = ScriptedEngine(
        lambda p: ["whoever: as asked"] if "reply as" in p else ["Bob: the model's pick"],
        info={"speakers": ["Alice", "Bob", "Carol"]},
    )
    model_dir.mkdir()
    engine.model_dir = model_dir
    next_speaker.save(scorer, model_dir)
    return engine


@pytest.fixture
def engine(scorer: next_speaker.NextSpeaker, tmp_path: Path) -> ScriptedEngine:
    return scored_engine(scorer, tmp_path / "model")


@contextmanager
def chatting(
    tmp_path: Path, loader: Callable[[ServedModels | None], ServedModels]
) -> Iterator[FriendBot]:
    """A started bot in which Bob said hello and Alice asked the bot about lunch."""
    service = FriendBot(make_settings(tmp_path), loader=loader)
    service.start()
    try:
        say(service, BOB, "hello")
        say(service, ALICE, "lunch?", addressed=True)
        yield service
    finally:
        service.stop()


async def test_the_bot_speaks_as_the_scorers_pick(tmp_path: Path, engine: ScriptedEngine) -> None:
    with chatting(tmp_path, served(engine)) as service:
        reply = await service.reply_in_character(GROUP, "Bob")
        assert reply is not None and (reply.speaker, reply.text) == ("Carol", "as asked")
        # the model was asked for Carol's reply, never to pick the speaker itself
        assert engine.prompts == ["Bob: hello\nAlice: lunch?\nreply as Carol:"]


async def test_never_the_asker_nor_someone_who_opted_out(
    tmp_path: Path, engine: ScriptedEngine
) -> None:
    with chatting(tmp_path, served(engine)) as service:
        reply = await service.reply_in_character(GROUP, "carol")  # Carol asked: not Carol
        assert reply is not None and reply.speaker not in {"Carol", None}
        assert engine.prompts[-1].endswith(f"reply as {reply.speaker}:")
        await service.opt_out(CAROL, "Carol", "carol_c")
        for asker in ("Bob", "Alice"):
            reply = await service.reply_in_character(GROUP, asker)
            assert reply is not None and reply.speaker not in {"Carol", asker}


async def test_without_a_usable_scorer_the_model_picks(
    tmp_path: Path, engine: ScriptedEngine
) -> None:
    with chatting(tmp_path, served(engine)) as service:
        (engine.model_dir / next_speaker.SCORER_FILE).write_text("{garbled", encoding="utf-8")
        reply = await service.reply_in_character(GROUP, "Alice")  # logged and ignored
        assert reply == Reply("Bob", "the model's pick", reply.origin if reply else None)
        assert engine.prompts == ["Bob: hello\nAlice: lunch?"]  # the free prompt only


async def test_a_reload_reads_the_new_models_scorer(
    tmp_path: Path, scorer: next_speaker.NextSpeaker
) -> None:
    plain = ScriptedEngine(["Bob: the model's pick"], name="plain")
    scored = scored_engine(scorer, tmp_path / "scored")
    loads = iter([plain, scored])
    with chatting(tmp_path, lambda _: served(next(loads))(None)) as service:
        reply = await service.reply_in_character(GROUP, "Alice")
        assert reply is not None and reply.speaker == "Bob"
        await service.reload()
        reply = await service.reply_in_character(GROUP, "Alice")
        assert reply is not None and reply.speaker == "Carol"
