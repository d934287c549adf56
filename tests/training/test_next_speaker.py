"""The next-speaker scorer: it learns who answers whom, picks within the allowed friends, is
saved as checked JSON beside a chat model by `train`, and `evaluate` reports its pick."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.training.test_evaluate import data_dir, model_dir  # noqa: F401 (shared fixtures)
from training.errors import InputError
from training.formatting import memory_line, persona_line, voice_line
from training.model import next_speaker
from training.model.evaluate import evaluate

WORDS = ["sure", "no idea", "lunch at noon", "see you", "ok then", "why not"]


def chat(n: int, seed: int) -> list[tuple[str, str]]:
    """(context, ``Sender: text``) pairs of a chat where Bob always answers Alice, whoever is
    named with a question mark answers, and otherwise Alice speaks most."""
    rng = random.Random(seed)
    history: list[str] = []
    pairs = []
    for _ in range(n + 1):
        last = history[-1] if history else ""
        named = next((who for who in ("Carol", "Dan") if f"{who}?" in last), None)
        if last.startswith("Alice:"):
            sender = "Bob"
        elif named:
            sender = named
        else:
            sender = rng.choice(["Alice", "Alice", "Alice", "Carol", "Dan"])
        text = rng.choice([*WORDS, "what do you think, Dan?", "Carol?"])
        line = f"{sender}: {text}"
        if history:
            pairs.append(("\n".join(history[-4:]), line))
        history.append(line)
    return pairs[:n]


@pytest.fixture(scope="module")
def scorer() -> next_speaker.NextSpeaker:
    fitted = next_speaker.fit(chat(600, seed=0))
    assert fitted is not None
    return fitted


def test_it_learns_who_answers_whom(scorer: next_speaker.NextSpeaker) -> None:
    assert scorer.pick(["Dan: hi", "Alice: lunch?"]) == "Bob"
    assert scorer.pick(["Alice: hi", "Bob: ok", "Alice: so?"]) == "Bob"
    assert scorer.pick(["Alice: hi", "Bob: what do you think, Dan?"]) == "Dan"
    probs = scorer.probabilities(["Dan: hi", "Alice: lunch?"])
    assert next(iter(probs)) == "Bob" and sum(probs.values()) == pytest.approx(1.0)
    held_out = chat(300, seed=1)
    real = [target.split(":")[0] for _, target in held_out]
    picks = [scorer.pick(ctx.split("\n")) for ctx, _ in held_out]
    hits = sum(got == who for got, who in zip(picks, real, strict=True))
    most_frequent = Counter(real).most_common(1)[0][1]
    assert hits > 1.5 * most_frequent


def test_pick_keeps_to_the_allowed_and_avoids(scorer: next_speaker.NextSpeaker) -> None:
    context = ["Dan: hi", "Alice: lunch?"]
    assert scorer.pick(context, avoid=["bob "]) not in {"Bob", None}  # any case or spacing
    assert scorer.pick(context, allowed={"carol", "BOB"}) == "Bob"
    assert scorer.pick(context, allowed={"Carol", "Bob"}, avoid=["Bob"]) == "Carol"
    assert scorer.pick(context, allowed={"Zed"}) is None
    assert scorer.pick(context, allowed=set()) is None
    assert scorer.pick([]) in {"Alice", "Bob", "Carol", "Dan"}  # an empty chat: by habit


def test_only_turns_count_as_context(scorer: next_speaker.NextSpeaker) -> None:
    lines = [
        voice_line("hi all"),
        memory_line("2024-01-01", "Alice", "lunch?"),
        "Dan: hi",
        "no sender here",
        persona_line("Carol"),
    ]
    assert next_speaker.context_turns(lines) == [("Dan", "hi")]
    assert scorer.probabilities(lines) == scorer.probabilities(["Dan: hi"])


def test_saved_as_plain_json_read_back_identically_and_checked(
    scorer: next_speaker.NextSpeaker, tmp_path: Path
) -> None:
    path = next_speaker.save(scorer, tmp_path)
    assert path == tmp_path / next_speaker.SCORER_FILE
    assert path.stat().st_size < next_speaker.MAX_FILE_BYTES
    data = json.loads(path.read_text(encoding="utf-8"))  # nothing runs on load
    assert data["format"] == next_speaker.FORMAT and data["features"]
    again = next_speaker.load(tmp_path)
    assert again is not None
    for context in (["Dan: hi", "Alice: lunch?"], ["Bob: Carol?"], []):
        assert again.probabilities(context) == pytest.approx(scorer.probabilities(context))
    assert next_speaker.load(tmp_path / "none") is None
    path.write_text(json.dumps({**data, "weights": data["weights"][:3]}), encoding="utf-8")
    with pytest.raises(ValueError, match="3 weights"):
        next_speaker.load(tmp_path)
    path.write_text(json.dumps({**data, "features": ["other"]}), encoding="utf-8")
    with pytest.raises(ValueError, match="other features"):
        next_speaker.load(tmp_path)
    path.write_text('{"format": 1, "weights": [', encoding="utf-8")  # cut short
    with pytest.raises(ValueError, match=r"next_speaker\.json: not valid JSON"):
        next_speaker.load(tmp_path)


def test_one_sender_gives_no_scorer(tmp_path: Path) -> None:
    pairs = [("Kat: hi", "Kat: yo")] * 30
    assert next_speaker.fit(pairs) is None
    assert next_speaker.save_for_training(pairs, tmp_path) is None
    assert not (tmp_path / next_speaker.SCORER_FILE).exists()


def test_train_saves_it_and_evaluate_reports_the_bots_pick(
    model_dir: Path,  # noqa: F811
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The fixture chat has fixed habits (who answers whom): the pick learns them; the
    model's own ``Sender:`` stays ``speaker_accuracy``."""
    saved = next_speaker.load(model_dir)
    assert saved is not None and saved.tables.prior.keys() == {"Ann", "Ben", "Cleo", "Dan"}
    report = evaluate(model_dir, data_dir, "test", tmp_path / "r", do_generate=False)
    picked = report["next_speaker"]
    assert picked["scorer"] == next_speaker.SCORER_FILE
    top = report["baselines"]["most_frequent_speaker"]["speaker_accuracy"]
    assert picked["speaker_accuracy"] > max(0.6, 2 * top)
    assert sum(v["n"] for v in picked["per_speaker"].values()) == 24
    assert report["speaker_accuracy"] is None  # not generated: the model's pick is not scored
    markdown = (tmp_path / "r" / "eval.md").read_text(encoding="utf-8")
    assert "| speaker_accuracy, bot's pick (next-speaker scorer) |" in markdown
    assert "bot's pick (next-speaker scorer) |" in markdown.split("per real speaker")[1]
    assert (tmp_path / "r" / "speaker_accuracy.png").stat().st_size > 1000

    garbled = tmp_path / "garbled"
    shutil.copytree(model_dir, garbled, ignore=shutil.ignore_patterns("eval-*"))
    (garbled / next_speaker.SCORER_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"next_speaker\.json: not valid JSON"):
        evaluate(garbled, data_dir, "test", tmp_path / "r2", do_generate=False)
    assert not (tmp_path / "r2").exists()


def test_long_names_cannot_blow_up_the_file(tmp_path: Path) -> None:
    rng = random.Random(2)
    names = [f"{'😂' * 30} member {i:04d}" for i in range(1500)]  # ~130 UTF-8 bytes each
    history = [f"{names[0]}: hi"]
    pairs = []
    for _ in range(6000):
        line = f"{rng.choice(names)}: ok"
        pairs.append(("\n".join(history[-3:]), line))
        history.append(line)
    fitted = next_speaker.fit(pairs)
    assert fitted is not None
    path = next_speaker.save(fitted, tmp_path)
    assert path.stat().st_size < next_speaker.MAX_FILE_BYTES
    assert 100 < len(fitted.tables.prior) < 1500  # capped by bytes, the most active kept
    assert next_speaker.load(tmp_path) is not None
