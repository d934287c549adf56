"""The liked/disliked reply scorer (training.model.feedback_scorer) and its use in best-of-k."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.best_of import best_of
from bot.model_scorers import scorers_for
from tests.bot.scripted_engine import ScriptedEngine
from training.model import feedback_scorer
from training.model.decoding import DecodeOptions

LIKED = [
    "lol that's so you 😂",
    "haha yes!! 😂😂",
    "omg same 😂",
    "lol ok, pizza it is 😂",
    "hahaha I'm in",
]
DISLIKED = [
    "I am not sure what you mean by that.",
    "As a friend, I think that is a good idea.",
    "That is a good question.",
    "I do not know what that is.",
    "I think that you are right about that.",
]


@pytest.fixture
def scorer() -> feedback_scorer.FeedbackScorer:
    fitted = feedback_scorer.fit(LIKED + DISLIKED, [True] * 5 + [False] * 5)
    assert fitted is not None
    return fitted


def test_the_scorer_prefers_replies_like_the_liked_ones(
    scorer: feedback_scorer.FeedbackScorer,
) -> None:
    liked_like, disliked_like = scorer.score(["haha pizza again 😂", "I think that is a question."])
    assert liked_like > 0.5 > disliked_like
    assert scorer.info == {"liked": 5, "disliked": 5}


def test_too_little_feedback_fits_nothing() -> None:
    assert feedback_scorer.fit(LIKED[:2] + DISLIKED, [True] * 2 + [False] * 5) is None
    assert feedback_scorer.fit(["", " "] * 5, [True, False] * 5) is None  # empty texts


def test_saved_as_json_and_read_back_the_same(
    scorer: feedback_scorer.FeedbackScorer, tmp_path: Path
) -> None:
    path = feedback_scorer.save(scorer, tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))  # plain JSON: nothing runs on load
    assert data["format"] == 1 and data["weights"]
    again = feedback_scorer.load(tmp_path)
    assert again is not None
    texts = ["lol 😂", "I do not know."]
    assert again.score(texts) == pytest.approx(scorer.score(texts))
    assert feedback_scorer.load(tmp_path / "none") is None
    path.write_text('{"format": 99}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a feedback scorer"):
        feedback_scorer.load(tmp_path)


def test_best_of_k_ranks_with_the_served_models_scorer(
    scorer: feedback_scorer.FeedbackScorer, tmp_path: Path
) -> None:
    outputs = ["Bob: I think that is a good idea.", "Bob: lol pizza again 😂"]
    engine = ScriptedEngine(outputs)
    options = DecodeOptions(num_return_sequences=2)
    # without a scorer: equal log-probabilities keep the sampling order
    assert best_of(engine, "prompt", options, ())[0] == outputs[0]
    assert scorers_for(engine.model_dir) == (None, None)
    engine.model_dir = tmp_path
    feedback_scorer.save(scorer, tmp_path)
    assert best_of(engine, "prompt", options, ())[0] == outputs[1]
    (tmp_path / feedback_scorer.SCORER_FILE).write_text("not json", encoding="utf-8")
    assert best_of(engine, "prompt", options, ())[0] == outputs[0]  # unreadable: ignored
