"""Measures of imitation: loops, echo, the voice classifier, and their place in `evaluate`."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from tests.training.test_evaluate import data_dir, model_dir  # noqa: F401 (shared fixtures)
from training.model.decoding import (
    BOT_DECODING,
    GREEDY_DECODING,
    REPLY_CANDIDATES,
    DecodeOptions,
    hf_generate_kwargs,
)
from training.model.evaluate import evaluate, generate, load_model, score
from training.model.imitation import (
    PersonaCase,
    echoes,
    fit_voice,
    imitation_markdown,
    loops,
    measure_imitation,
    persona_cases,
    reply_measures,
    share,
    voice_speakers,
)

# --- loops and echo -------------------------------------------------------------------------


def test_loops_needs_a_word_trigram_three_times() -> None:
    replies = [
        "oh, i'm sorry, i'm sorry, i'm sorry",  # (i, m, sorry) x3
        "no no no no",  # (no, no, no) only twice
        "no no no no no",  # three times
        "a b c a b c",  # twice
        "😂 😂 😂 😂 😂",  # emoji are words too
        "",
    ]
    assert [loops(r) for r in replies] == [True, False, True, False, True, False]
    assert share([loops(r) for r in replies]) == pytest.approx(3 / 6)


def test_echo_compares_texts_without_sender_case_or_spacing() -> None:
    context = ["Ann: Hello   World", "Ben: ok then"]
    assert echoes("hello world", context)
    assert echoes("OK  then", context)  # another speaker's line copied is still a copy
    assert not echoes("hello world!", context)
    assert not echoes("Ann", context)
    assert not echoes("", ["Ann: "])  # saying nothing is not an echo
    flags = [echoes(r, context) for r in ["hello world", "new words", "ok then", "ok"]]
    assert share(flags) == pytest.approx(2 / 4)


def test_score_reports_loops_and_echo_beside_the_other_metrics() -> None:
    replies = ["Ann: ha ha ha ha ha", "Ben: Hello world", "Cleo: fresh"]
    real = ["Ann: x", "Ben: y", "Cleo: z"]
    contexts = [["Ben: hi"], ["Ann: hello world"], ["Ann: fresh!"]]
    result = score(replies, real, ["Ann", "Ben", "Cleo"], contexts)
    assert result["loops"] == pytest.approx(1 / 3)
    assert result["echo"] == pytest.approx(1 / 3)
    assert score(replies, real, ["Ann", "Ben", "Cleo"])["echo"] is None


# --- voice ------------------------------------------------------------------------------------

WORDS = [
    "time",
    "place",
    "train",
    "lunch",
    "music",
    "game",
    "code",
    "book",
    "movie",
    "coffee",
    "weekend",
    "party",
]


def _styled(speaker: str, rng: random.Random) -> str:
    """Same topics, different habits: Kat shouts in lowercase with emoji, Lee writes prose."""
    words = rng.sample(WORDS, 3)
    if speaker == "Kat":
        return f"omg {' '.join(words)} lol 😂😂"
    return f"I think the {words[0]}, the {words[1]} and the {words[2]} are fine; regards."


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        speaker = "Kat" if i % 2 else "Lee"
        other = "Lee" if speaker == "Kat" else "Kat"
        rows.append(
            {
                "conversation": f"{other}: {_styled(other, rng)}\n{other}: same here",
                "response": f"{speaker}: {_styled(speaker, rng)}",
                "sender": speaker,
            }
        )
    return rows


def test_voice_classifier_tells_two_styles_apart() -> None:
    train, test = _rows(80, seed=0), _rows(20, seed=1)
    texts = [r["response"].split(": ", 1)[1] for r in train]
    classifier = fit_voice(texts, [r["sender"] for r in train], ["Kat", "Lee"])
    assert set(classifier.speakers) == {"Kat", "Lee"}
    held_out = [r["response"].split(": ", 1)[1] for r in test]
    guesses = classifier.predict(held_out)
    assert share([g == r["sender"] for g, r in zip(guesses, test, strict=True)]) >= 0.95
    assert classifier.predict(["", "  "]) == [None, None]
    kat = classifier.probability(["omg lunch game code lol 😂😂", ""], "Kat")
    assert kat[0] > 0.8 and kat[1] == 0.0


def test_voice_speakers_need_messages_in_both_splits() -> None:
    train = ["Old"] * 50 + ["Kat"] * 30 + ["Lee"] * 25 + ["Rare"] * 3
    evaluated = ["Kat"] * 6 + ["Lee"] * 5 + ["Rare"] * 9 + ["New"] * 20
    # Old left before the evaluated split, Rare barely wrote in training, New only joined later
    assert voice_speakers(train, evaluated) == ["Kat", "Lee"]
    assert voice_speakers(train, evaluated, top_n=1) == ["Kat"]


def test_measure_imitation_scores_each_reply_set() -> None:
    train, test = _rows(80, seed=0), _rows(10, seed=1)
    calls: list[tuple[int, bool]] = []

    def fake_generate(cases: list[PersonaCase], options: DecodeOptions) -> list[str]:
        """Greedy: the real replies; sampled: the other friend's voice, or a loop."""
        prompts = [c.prompt for c in cases]
        assert [c.persona for c in cases] == [r["sender"] for r in test]
        calls.append((len(prompts), options.sample))
        assert all(p.rsplit("\n", 1)[-1] in ("reply as Kat:", "reply as Lee:") for p in prompts)
        if not options.sample:
            return [r["response"] for r in test]
        rng = random.Random(2)
        wrong = {"Kat": "Lee", "Lee": "Kat"}
        return [
            f"{r['sender']}: " + ("so so so so so" if i < 2 else _styled(wrong[r["sender"]], rng))
            for i, r in enumerate(test)
        ]

    report = measure_imitation(
        test,
        train,
        fake_generate,
        {"greedy": GREEDY_DECODING, "sampled": BOT_DECODING},
        {"repeat_last_line": lambda rs: [r["conversation"].rsplit("\n", 1)[-1] for r in rs]},
    )
    assert report is not None
    assert calls == [(10, False), (10, True)]
    assert sorted(report["speakers"]) == ["Kat", "Lee"] and report["cases"] == 10
    assert report["voice_ceiling"] == 1.0
    assert report["voice_chance"] == 0.5 and report["voice_uniform"] == 0.5
    greedy, sampled = report["greedy"], report["sampled"]
    # the real replies are the ceiling, exactly
    assert greedy["voice"] == report["voice_ceiling"]
    # the independent word judge reads the same replies with its own ceiling
    assert greedy["voice_word_balanced"] == report["voice_ceiling_word_balanced"] == 1.0
    assert sampled["voice_word_balanced"] <= 0.2
    assert (greedy["loops"], greedy["echo"], greedy["persona_kept"]) == (0.0, 0.0, 1.0)
    # 8 in the other voice (never attributed to the persona) and 2 loops ("so so so")
    assert sampled["voice"] <= 0.2 and sampled["loops"] == pytest.approx(2 / 10)
    assert sampled["persona_kept"] == 1.0
    assert sampled["per_speaker"]["Kat"]["n"] + sampled["per_speaker"]["Lee"]["n"] == 10
    # repeating "Other: same here" copies a context line every time, in nobody's voice
    parrot = report["baselines"]["repeat_last_line"]
    assert parrot["echo"] == 1.0 and parrot["persona_kept"] == 0.0
    assert report["decoding"]["sampled"]["repetition_penalty"] == BOT_DECODING.repetition_penalty
    markdown = "\n".join(imitation_markdown(report))
    assert "| voice | 1.000 |" in markdown and "| Kat | 5 | 1.000 |" in markdown


def test_persona_balanced_voice_scores_one_voice_at_one_over_n() -> None:
    """Kat asked for 3 in 4 prompts: answering everything in Kat's voice scores 0.75 on the
    plain share (the majority) but 1/2 balanced, and chance is 1/2 on the balanced measure."""
    train = _rows(80, seed=0)
    rng = random.Random(5)
    test = [r for r in _rows(16, seed=1) if r["sender"] == "Kat"]
    test += [r for r in _rows(12, seed=2) if r["sender"] == "Kat"]
    test += [r for r in _rows(8, seed=3) if r["sender"] == "Lee"]
    test += [r for r in _rows(12, seed=4) if r["sender"] == "Lee"][:1]  # 14 Kat, 5 Lee
    assert sum(r["sender"] == "Kat" for r in test) == 14 and len(test) == 19

    def all_kat(cases: list[PersonaCase], options: DecodeOptions) -> list[str]:
        return [f"Kat: {_styled('Kat', rng)}" for _ in cases]

    report = measure_imitation(test, train, all_kat, {"greedy": GREEDY_DECODING})
    assert report is not None
    assert report["voice_chance"] == pytest.approx(14 / 19)
    assert report["voice_chance_balanced"] == 0.5
    assert report["voice_ceiling_balanced"] == 1.0
    greedy = report["greedy"]
    assert greedy["voice"] == pytest.approx(14 / 19)  # every Kat prompt right, every Lee wrong
    assert greedy["voice_balanced"] == pytest.approx(0.5)
    markdown = "\n".join(imitation_markdown(report))
    assert "| voice_balanced | 0.500 |" in markdown and "chance **0.500**" in markdown


def test_measure_imitation_needs_two_speakers() -> None:
    train = [r for r in _rows(80, seed=0) if r["sender"] == "Kat"]
    assert (
        measure_imitation(_rows(10, 1), train, lambda c, o: [], {"greedy": GREEDY_DECODING}) is None
    )
    assert "Not measured" in "\n".join(imitation_markdown(None))


def test_reply_measures_counts_empty_replies_as_no_voice() -> None:
    train = _rows(40, seed=0)
    texts = [r["response"].split(": ", 1)[1] for r in train]
    classifier = fit_voice(texts, [r["sender"] for r in train], ["Kat", "Lee"])
    cases = persona_cases(_rows(4, seed=1), ["Kat", "Lee"])
    measures = reply_measures(classifier, cases, ["", "   ", "Lee: hello", "nobody"])
    assert measures["empty"] == pytest.approx(2 / 4)
    assert measures["voice"] <= 2 / 4
    # an empty reply is in nobody's voice (a classifier alone would still name someone)
    assert reply_measures(classifier, cases, [""] * 4)["voice"] == 0.0


# --- decoding defaults ----------------------------------------------------------------------


def test_decoding_defaults_guard_against_loops_for_both_decodings() -> None:
    for opts in (BOT_DECODING, GREEDY_DECODING):
        kwargs = hf_generate_kwargs(opts)
        assert kwargs["no_repeat_ngram_size"] == 3 and kwargs["repetition_penalty"] == 1.2
    assert hf_generate_kwargs(BOT_DECODING)["do_sample"] is True
    assert hf_generate_kwargs(GREEDY_DECODING)["do_sample"] is False
    with pytest.raises(ValueError, match="repetition_penalty"):
        DecodeOptions(repetition_penalty=0)
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        DecodeOptions(no_repeat_ngram_size=-1)


def test_generation_with_the_guards_never_loops(model_dir: Path) -> None:  # noqa: F811
    """Forced to write 40 tokens, the tiny model loops unless the guards are on.

    Unguarded, the loop may be in sub-word pieces ("Annnnnnn", "samees 😂!!!l samees") that
    the word measure does not see, so the premise is checked on token 3-grams.
    """
    model, info = load_model(model_dir)
    tokenizer = info.tokenizer
    prompts = ["Ann: omg yes 😂\nreply as Ben:", "Dan: LETS GO!!!", "Cleo: see you at ten."]
    forced = replace(GREEDY_DECODING, max_new_tokens=40, min_new_tokens=40)
    unguarded = replace(forced, no_repeat_ngram_size=0, repetition_penalty=1.0)

    def token_loops(text: str) -> bool:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        grams = Counter(tuple(ids[i : i + 3]) for i in range(len(ids) - 2))
        return bool(grams) and max(grams.values()) >= 3

    assert any(token_loops(r) for r in generate(model, tokenizer, prompts, 64, unguarded))
    for opts in (forced, replace(BOT_DECODING, max_new_tokens=40, min_new_tokens=40, seed=0)):
        assert not any(loops(r) for r in generate(model, tokenizer, prompts, 64, opts))


def test_sampled_generation_is_repeatable(model_dir: Path) -> None:  # noqa: F811
    model, info = load_model(model_dir)
    tokenizer = info.tokenizer
    prompts = ["Ann: omg yes 😂\nreply as Ben:", "Dan: LETS GO!!!\nreply as Cleo:"] * 3
    sampled = replace(BOT_DECODING, seed=7)
    assert generate(model, tokenizer, prompts, 64, sampled) == generate(
        model, tokenizer, prompts, 64, sampled
    )


# --- in the report ----------------------------------------------------------------------------


def test_evaluate_reports_imitation_and_draws_voice(
    model_dir: Path,  # noqa: F811
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    evaluate(model_dir, data_dir, "test", tmp_path / "r", progress=False)

    saved = json.loads((tmp_path / "r" / "eval.json").read_text())
    imitation = saved["imitation"]
    # the fixture chat: four friends, each with at least five of the 24 test pairs
    assert sorted(imitation["speakers"]) == ["Ann", "Ben", "Cleo", "Dan"]
    assert imitation["cases"] == 24
    # their habits are fixed phrases: the classifier recognises every real reply
    assert imitation["voice_ceiling"] == 1.0
    assert imitation["voice_chance"] == pytest.approx(7 / 24)
    assert imitation["voice_uniform"] == 0.25
    for decoding in ("greedy", "sampled", "bot"):
        measures = imitation[decoding]
        for key in ("voice", "voice_word_balanced", "persona_kept", "loops", "echo", "empty"):
            assert 0.0 <= measures[key] <= 1.0, (decoding, key)
        assert measures["loops"] == 0.0  # the guards
        assert measures["persona_kept"] == 1.0  # every reply starts with the forced NAME:
        assert sum(v["n"] for v in measures["per_speaker"].values()) == 24
    assert imitation["decoding"]["sampled"]["sample"] is True
    assert imitation["decoding"]["greedy"]["sample"] is False
    # the bot's row: REPLY_CANDIDATES samples ranked with the voice scorer `train` saved
    assert imitation["decoding"]["bot"]["num_return_sequences"] == REPLY_CANDIDATES
    assert imitation["bot_ranking"] == {
        "candidates": REPLY_CANDIDATES,
        "voice_scorer": True,
        "feedback_scorer": False,
    }
    assert imitation["baselines"]["repeat_last_line"]["echo"] == 1.0
    for key in ("loops", "echo"):
        assert isinstance(saved[key], float)
    assert saved["baselines"]["repeat_last_line"]["echo"] == 1.0

    markdown = (tmp_path / "r" / "eval.md").read_text()
    assert "## Imitation" in markdown and "| voice |" in markdown and "| loops |" in markdown
    assert (tmp_path / "r" / "voice.png").stat().st_size > 1000


def test_evaluate_without_generation_has_no_imitation(
    model_dir: Path,  # noqa: F811
    data_dir: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    report = evaluate(
        model_dir, data_dir, "test", tmp_path / "r", do_generate=False, progress=False
    )
    assert report["imitation"] is None and report["loops"] is None
    assert not (tmp_path / "r" / "voice.png").exists()
