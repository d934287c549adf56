"""The voice term of best-of-k: the saved voice scorer, its use by the bot, and `evaluate`'s
"bot" row ranking exactly as the bot does."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from bot.best_of import best_of
from tests.bot.scripted_engine import ScriptedEngine
from tests.training.test_evaluate import data_dir, model_dir  # noqa: F401 (shared fixtures)
from tests.training.test_imitation import _rows, _styled
from training.model import feedback_scorer, scorer_files, voice_scorer
from training.model.decoding import BOT_DECODING, DecodeOptions
from training.model.evaluate import best_of_replies, generate_scored, load_model
from training.model.imitation import persona_cases
from training.model.rerank import (
    VOICE_WEIGHT,
    Candidate,
    rank,
    score_candidate,
    with_model_scorers,
)


@pytest.fixture(scope="module")
def scorer() -> voice_scorer.VoiceScorer:
    train = _rows(80, seed=0)
    fitted = voice_scorer.fit(
        [r["response"].split(": ", 1)[1] for r in train], [r["sender"] for r in train]
    )
    assert fitted is not None
    return fitted


def test_the_scorer_knows_each_friends_voice(scorer: voice_scorer.VoiceScorer) -> None:
    rng = random.Random(3)
    kat, lee = _styled("Kat", rng), _styled("Lee", rng)
    assert set(scorer.speakers) == {"Kat", "Lee"}
    assert scorer.probability(kat, "Kat") > 0.8 and scorer.probability(lee, "Lee") > 0.8
    assert sum(scorer.probabilities(kat).values()) == pytest.approx(1.0)
    assert scorer.probability(kat, "Nobody") == 0.0  # unknown persona: no voice term at all


def test_saved_as_plain_json_and_read_back_identically(
    scorer: voice_scorer.VoiceScorer, tmp_path: Path
) -> None:
    path = voice_scorer.save(scorer, tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))  # nothing runs on load
    assert data["format"] == 1 and data["speakers"] and data["weights"]
    again = voice_scorer.load(tmp_path)
    assert again is not None
    for text in ["omg lunch code lol 😂😂", "I think the book is fine; regards.", ""]:
        assert again.probabilities(text) == pytest.approx(scorer.probabilities(text))
    assert voice_scorer.load(tmp_path / "none") is None
    data["intercepts"] = data["intercepts"][:1]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match="do not match"):
        voice_scorer.load(tmp_path)
    path.write_text('{"format": 99}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a voice scorer"):
        voice_scorer.load(tmp_path)
    path.write_text('{"format": 1, "speakers": [', encoding="utf-8")  # cut short
    with pytest.raises(ValueError, match=r"voice_scorer\.json: not valid JSON"):
        voice_scorer.load(tmp_path)


def test_both_scorers_read_a_reply_as_padded_word_ngrams() -> None:
    words = {" Hi", "Hi ", " Hi ", " H", "Hi", "i ", " yo", "yo ", " yo ", " y", "yo", "o "}
    assert scorer_files.char_ngrams("Hi  yo\t") == words  # case kept, any whitespace splits
    assert scorer_files.char_ngrams("") == set()
    weights = scorer_files.features("Hi yo")
    assert set(weights) == words
    assert sum(v * v for v in weights.values()) == pytest.approx(1.0)  # length does not win
    assert voice_scorer.features is feedback_scorer.features is scorer_files.features


def test_one_speaker_gives_no_scorer(tmp_path: Path) -> None:
    assert voice_scorer.fit(["a b", "c d"] * 20, ["Kat"] * 40) is None
    assert voice_scorer.save_for_training(["Kat: a b"] * 40, tmp_path) is None
    assert not (tmp_path / voice_scorer.SCORER_FILE).exists()


def test_the_voice_decides_between_similarly_likely_replies(
    scorer: voice_scorer.VoiceScorer,
) -> None:
    rng = random.Random(4)
    in_voice = Candidate(f"Kat: {_styled('Kat', rng)}", -2.5, persona="Kat")
    other = Candidate(f"Kat: {_styled('Lee', rng)}", -2.0, persona="Kat")
    plain = with_model_scorers(score_candidate)
    assert plain is score_candidate and rank([other, in_voice], plain)[0] == other.text
    voiced = with_model_scorers(score_candidate, scorer)
    assert rank([other, in_voice], voiced)[0] == in_voice.text
    assert voiced(in_voice) == pytest.approx(
        -2.5 + VOICE_WEIGHT * scorer.probability(in_voice.text.split(": ", 1)[1], "Kat")
    )
    # no persona asked for (the model picks the speaker): the voice adds nothing
    free = replace(in_voice, persona=None)
    assert voiced(free) == score_candidate(free)
    # never against a loop
    looping = Candidate("Kat: omg lol omg lol omg lol omg lol 😂", -0.5, persona="Kat")
    assert rank([looping, other], voiced)[0] == other.text


def test_the_bot_ranks_with_the_voice_scorer_saved_with_its_model(
    scorer: voice_scorer.VoiceScorer, tmp_path: Path
) -> None:
    rng = random.Random(5)
    outputs = [f"Kat: {_styled('Lee', rng)}", f"Kat: {_styled('Kat', rng)}"]
    engine = ScriptedEngine(outputs)
    options = DecodeOptions(num_return_sequences=2)
    assert best_of(engine, "prompt", options, (), "Kat")[0] == outputs[0]  # no scorer: order
    engine.model_dir = tmp_path
    voice_scorer.save(scorer, tmp_path)
    assert best_of(engine, "prompt", options, (), "Kat")[0] == outputs[1]
    (tmp_path / voice_scorer.SCORER_FILE).write_text("not json", encoding="utf-8")
    assert best_of(engine, "prompt", options, (), "Kat")[0] == outputs[0]  # ignored, logged


def test_evaluate_ranks_the_candidates_the_bot_would_draw(
    model_dir: Path,  # noqa: F811
    data_dir: Path,  # noqa: F811
) -> None:
    """`train` saved a voice scorer; evaluate's generate_scored draws what the bot's HF engine
    draws (same texts, same log-probabilities) and best_of_replies keeps the best-ranked."""
    from bot.engine import ReplyEngine
    from training.model.tasks import read_chat_split

    saved = voice_scorer.load(model_dir)
    assert saved is not None and len(saved.speakers) >= 2
    model, info = load_model(model_dir)
    rows = read_chat_split(data_dir, "test")[:3]
    cases = persona_cases(rows, [r["sender"] for r in rows])
    options = replace(BOT_DECODING, num_return_sequences=3, seed=11)
    engine = ReplyEngine.load(model_dir, backend="hf")
    for case in cases:
        mine = generate_scored(
            model, info.tokenizer, [case.prompt], info.max_source_length, options
        )[0]
        bots = engine.generate_scored([case.prompt], options)[0]
        assert [t for t, _ in mine] == [t for t, _ in bots]
        assert [s for _, s in mine] == pytest.approx([s for _, s in bots], abs=1e-5)
    scorer = with_model_scorers(score_candidate, saved)
    for case in cases:  # one case per call: each draw starts from the same seed
        chosen = best_of_replies(
            model, info.tokenizer, [case], info.max_source_length, options, scorer
        )
        cands = generate_scored(
            model, info.tokenizer, [case.prompt], info.max_source_length, options
        )[0]
        ranked = rank([Candidate(t, s, case.context, case.persona) for t, s in cands], scorer)
        assert chosen == [ranked[0]]
