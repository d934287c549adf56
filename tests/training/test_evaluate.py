"""`friendbot evaluate`: metrics, baselines, the files written, and the loss used by retraining."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.training.fixtures.chatdata import write_dataset
from training.errors import InputError
from training.model import evaluate as evaluate_module
from training.model import voice_scorer
from training.model.evaluate import (
    distinct_n,
    evaluate,
    evaluate_loss,
    most_frequent_speaker_replies,
    repeat_last_line_replies,
    rouge_l,
    score,
)
from training.model.finetune import TrainConfig, train

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("eval") / "data")


@pytest.fixture(scope="module")
def model_dir(data_dir: Path) -> Path:
    """A tiny chat model trained for a few dozen steps (about two seconds)."""
    out = data_dir.parent / "model"
    config = TrainConfig(
        data=data_dir,
        out=out,
        max_steps=40,
        token_budget=512,
        learning_rate=3e-3,
        eval_every=20,
        tiny_vocab=300,
        progress=False,
    )
    return train(config)


# --- generation ---------------------------------------------------------------------------


def test_persona_replies_start_with_the_persona_and_free_prompts_are_unchanged(
    model_dir: Path,
) -> None:
    """Asked ``reply as NAME:``, evaluate's greedy, sampled and best-of replies all start with
    ``NAME:`` (a forced decoder prefix, as the bot's), also for a name the model would not
    have signed; a prompt without a persona line is generated as the plain model does."""
    import torch

    from training.model.decoding import BOT_DECODING, GREEDY_DECODING, hf_generate_kwargs
    from training.model.evaluate import generate, generate_scored, load_model

    model, info = load_model(model_dir)
    tokenizer = info.tokenizer
    context = "Ann: omg yes 😂\nDan: LETS GO!!!"
    personas = ["Ann", "Ben", "Cleo", "Dan"]
    prompts = [f"{context}\nreply as {name}:" for name in personas]

    def plain(prompt: str) -> str:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, **hf_generate_kwargs(GREEDY_DECODING))
        return tokenizer.decode(out[0], skip_special_tokens=True).strip()

    signed = [plain(p).split(":")[0] for p in prompts]
    assert any(s != name for s, name in zip(signed, personas, strict=True)), signed
    greedy = generate(model, tokenizer, [*prompts, context], 64)
    assert greedy[-1] == plain(context)
    sampled = generate(model, tokenizer, prompts, 64, replace(BOT_DECODING, seed=3))
    scored = generate_scored(
        model, tokenizer, prompts, 64, replace(BOT_DECODING, seed=3, num_return_sequences=3)
    )
    for i, name in enumerate(personas):
        texts = [greedy[i], sampled[i], *(t for t, _ in scored[i])]
        assert all(t.startswith(f"{name}:") for t in texts), texts
        assert all(-50 < lp <= 0 for _, lp in scored[i])


# --- metrics ------------------------------------------------------------------------------


def test_rouge_l_is_unicode_aware() -> None:
    # rouge-score's default tokenizer drops everything but [a-z0-9]
    assert rouge_l(["привет как дела 😂"], ["привет как дела 😂"]) == pytest.approx(1.0)
    assert rouge_l(["привет мир"], ["пока мир"]) == pytest.approx(0.5)
    assert rouge_l([], []) == 0.0


def test_distinct_n_counts_unique_ngrams() -> None:
    assert distinct_n(["lol lol lol"], 1) == pytest.approx(1 / 3)
    assert distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)
    assert distinct_n(["a b c"], 2) == 1.0
    assert distinct_n([""], 1) == 0.0


def test_score_speaker_accuracy_per_speaker() -> None:
    replies = ["Ann: hi", "Ann: yo", "nobody speaks", "Ben: ok"]
    real = ["Ann: hi", "Ben: yo", "Ben: hey", "Ben: ok"]
    result = score(replies, real, ["Ann", "Ben", "Ben", "Ben"])
    assert result["speaker_accuracy"] == pytest.approx(0.5)
    assert result["per_speaker"] == {
        "Ann": {"n": 1, "accuracy": 1.0},
        "Ben": {"n": 3, "accuracy": pytest.approx(1 / 3)},
    }
    # ROUGE-L on the text only: "yo" matches although the speaker is wrong
    assert result["rouge_l"] == pytest.approx(3 / 4)


def test_baselines() -> None:
    train_rows = [
        {"conversation": "", "response": "Ann: lol", "sender": "Ann"},
        {"conversation": "", "response": "Ann: lol", "sender": "Ann"},
        {"conversation": "", "response": "Ann: omg", "sender": "Ann"},
        {"conversation": "", "response": "Ben: ok", "sender": "Ben"},
    ]
    assert most_frequent_speaker_replies(train_rows, 2) == ("Ann", ["Ann: lol", "Ann: lol"])
    rows = [{"conversation": "Ann: a\nBen: b"}, {"conversation": "Cleo: c"}, {"conversation": ""}]
    assert repeat_last_line_replies(rows) == ["Ben: b", "Cleo: c", ""]


# --- the command ----------------------------------------------------------------------------


def test_evaluate_writes_report_with_baselines(
    model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    report = evaluate(model_dir, data_dir, "test", tmp_path / "report", progress=False)

    saved = json.loads((tmp_path / "report" / "eval.json").read_text())
    for key in ("loss", "perplexity", "rouge_l", "speaker_accuracy", "distinct_1", "distinct_2"):
        assert isinstance(saved[key], float), key
    assert saved["examples"] == 24
    assert saved["perplexity"] == pytest.approx(math.exp(saved["loss"]))
    assert 0.0 <= saved["speaker_accuracy"] <= 1.0
    assert sum(v["n"] for v in saved["per_speaker"].values()) == 24
    base = saved["baselines"]
    assert set(base) == {"most_frequent_speaker", "repeat_last_line"}
    # the fixture chat never has a speaker answer themselves: repeating the last line is
    # always the wrong speaker, and the most frequent one is right about a quarter of the time
    assert base["repeat_last_line"]["speaker_accuracy"] == 0.0
    assert 0.1 < base["most_frequent_speaker"]["speaker_accuracy"] < 0.5
    assert report["out_dir"] == str(tmp_path / "report")

    markdown = (tmp_path / "report" / "eval.md").read_text()
    assert "| speaker_accuracy |" in markdown and "## Sample generations" in markdown
    assert (tmp_path / "report" / "speaker_accuracy.png").stat().st_size > 1000


def test_evaluate_loss_matches_the_report(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    report = evaluate(
        model_dir, data_dir, "validation", tmp_path / "r", do_generate=False, progress=False
    )
    assert report["rouge_l"] is None and report["speaker_accuracy"] is None
    assert evaluate_loss(model_dir, data_dir, "validation") == pytest.approx(report["loss"])
    info = json.loads((model_dir / "friendbot.json").read_text())
    # the training loop's validation loss is the same measure on the same split
    assert info["metrics"]["validation_loss"] == pytest.approx(report["loss"], rel=1e-4)


def test_evaluate_default_output_and_limit(model_dir: Path, data_dir: Path) -> None:
    report = evaluate(model_dir, data_dir, limit=5, progress=False)
    assert report["examples"] == 5
    assert Path(report["out_dir"]) == model_dir / "eval-test"
    assert (model_dir / "eval-test" / "eval.json").is_file()


def test_cli_evaluate_prints_a_table(
    model_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    where = ["--model", str(model_dir), "--data", str(data_dir), "--out", str(tmp_path / "r")]
    main(["evaluate", *where, "--limit", "6"])
    out = capsys.readouterr().out
    assert "speaker_accuracy" in out and "repeat last line" in out
    assert (tmp_path / "r" / "eval.json").is_file()


def test_evaluate_bad_inputs(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such model directory"):
        evaluate(tmp_path / "nope", data_dir, progress=False)
    with pytest.raises(InputError, match="no such dataset directory"):
        evaluate(model_dir, tmp_path / "nope", progress=False)
    empty = write_dataset(tmp_path / "empty", n_test=0)
    with pytest.raises(InputError, match=r"test\.parquet: no examples"):
        evaluate(model_dir, empty, progress=False)
    with pytest.raises(InputError, match="unknown split"):
        evaluate_loss(model_dir, data_dir, "dev")


def test_an_unreadable_reply_scorer_stops_evaluate_before_it_generates(
    model_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    garbled = tmp_path / "garbled"
    shutil.copytree(model_dir, garbled, ignore=shutil.ignore_patterns("eval-*"))
    (garbled / voice_scorer.SCORER_FILE).write_text('{"format": 1, "cla', encoding="utf-8")
    generated: list[int] = []
    real_generate = evaluate_module.generate

    def counting(*args: object, **kwargs: object) -> list[str]:
        generated.append(1)
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "generate", counting)
    with pytest.raises(InputError, match=r"unreadable reply scorer .*voice_scorer\.json"):
        evaluate(garbled, data_dir, "test", tmp_path / "report", progress=False)
    assert generated == []  # refused before minutes of generation, not after
    assert not (tmp_path / "report").exists()


def test_evaluate_refuses_task_models(data_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        data=FIXTURES / "jokes_sample.csv",
        out=tmp_path / "joke",
        task="joke",
        max_steps=2,
        tiny_vocab=200,
        progress=False,
    )
    with pytest.raises(InputError, match="a joke model"):
        evaluate_loss(train(config), data_dir, "test")


def test_evaluate_refuses_a_model_without_its_tokenizer_vocabulary(
    model_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli import main

    broken = Path(shutil.copytree(model_dir, tmp_path / "broken"))
    (broken / "tokenizer.json").unlink()  # AutoTokenizer would fall back to 4 tokens
    where = ["--model", str(broken), "--data", str(data_dir), "--out", str(tmp_path / "r")]

    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", *where])  # used to exit 0 with a meaningless, lower loss

    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"friendbot: error: {broken}: no tokenizer vocabulary")
    assert "\n" not in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(InputError, match="no tokenizer vocabulary"):
        evaluate_loss(broken, data_dir, "test")


def test_evaluate_refuses_a_chat_model_without_friendbot_json(
    model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    bare = Path(shutil.copytree(model_dir, tmp_path / "bare"))
    (bare / "friendbot.json").unlink()  # its source length used to become 512 silently
    with pytest.raises(InputError, match=r"no friendbot\.json, so its prompt lengths"):
        evaluate(bare, data_dir, progress=False)
