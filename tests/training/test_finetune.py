"""Fine-tuning the tiny model end to end: files written, resume equivalence, tasks, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.fixtures.chatdata import write_dataset
from training.errors import InputError
from training.model import reply_vocabulary
from training.model.batching import bucket_length, collate, plan_batches
from training.model.checkpoints import TrainState
from training.model.evaluate import evaluate_loss
from training.model.finetune import TrainConfig, partial_dir, train
from training.model.loop import EarlyStopping
from training.model.tasks import load_jokes, load_paraphrase, load_task

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
TRAIN = [sys.executable, "-m", "training.cli", "train"]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("chat") / "data")


def quick(data: Path, out: Path, **overrides: object) -> TrainConfig:
    """A config that trains the tiny model for a few steps in about a second."""
    settings: dict = {
        "max_steps": 6,
        "token_budget": 512,
        "eval_every": 3,
        "checkpoint_every": 100,
        "log_every": 2,
        "tiny_vocab": 300,
        "max_source_length": 48,
        "progress": False,
    }
    settings.update(overrides)
    return TrainConfig(data=data, out=out, **settings)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM.from_pretrained(model_dir).state_dict()


def metric_lines(model_dir: Path) -> list[dict]:
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k != "tokens_per_s"} for ln in lines]


# --- batching ------------------------------------------------------------------------------


def test_bucket_lengths_are_few_and_cover_the_input() -> None:
    sizes = {bucket_length(n) for n in range(1, 513)}
    assert len(sizes) <= 24
    for n in range(1, 513):
        b = bucket_length(n)
        assert n <= b and b - n < max(8, n / 4)  # at most a quarter (or 8 tokens) of padding
    assert bucket_length(500, cap=480) == 480


def test_plan_batches_respects_budget_and_is_seeded() -> None:
    rng = torch.Generator().manual_seed(0)
    src = torch.randint(3, 200, (300,), generator=rng).tolist()
    tgt = torch.randint(2, 40, (300,), generator=rng).tolist()
    plan = plan_batches(src, tgt, 2048, seed=1, epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(300))
    for batch in plan:
        width = max(bucket_length(src[i]) for i in batch) + max(
            bucket_length(tgt[i]) for i in batch
        )
        assert len(batch) == 1 or len(batch) * width <= 2048
    assert plan == plan_batches(src, tgt, 2048, seed=1, epoch=0)
    assert plan != plan_batches(src, tgt, 2048, seed=1, epoch=1)


def test_collate_pads_inputs_and_masks_labels() -> None:
    batch = collate([[5, 6, 7, 1], [8, 1]], [[9, 1], [4, 4, 4, 1]], pad_id=0)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][1].tolist() == [8, 1, 0, 0, 0, 0, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert batch["labels"][0].tolist() == [9, 1] + [-100] * 6


def test_early_stopping_counts_evals_without_improvement() -> None:
    state = TrainState()
    stopper = EarlyStopping(state, patience=2, min_delta=0.01)
    assert stopper.update(2.0, 10) == (True, False)
    assert stopper.update(1.995, 20) == (False, False)  # within min_delta: no improvement
    assert stopper.update(1.5, 30) == (True, False)
    assert stopper.update(1.6, 40) == (False, False)
    assert stopper.update(1.7, 50) == (False, True)
    assert (state.best_loss, state.best_step) == (1.5, 30)


# --- training end to end -------------------------------------------------------------------


def test_train_tiny_writes_a_loadable_model(chat_data: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = train(quick(chat_data, tmp_path / "model"))

    assert out == tmp_path / "model"
    assert not partial_dir(out).exists()  # checkpoints cleaned up after success
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    for name in ("config.json", "generation_config.json", "friendbot.json", "loss.png"):
        assert (out / name).is_file(), name
    info = json.loads((out / "friendbot.json").read_text())
    assert info["base_model"] == "tiny" and info["task"] == "chat"
    assert info["max_source_length"] == 48 and info["max_target_length"] == 64
    assert info["metrics"]["steps"] == 6
    assert info["metrics"]["validation_loss"] > 0
    assert len(info["dataset"]["fingerprint"]) == 16
    assert info["hyperparameters"]["learning_rate"] == 1e-3
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert [r["step"] for r in records if "train_loss" in r] == [2, 4, 6]

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    # the pieces replies are decoded over once converted (export-ct2's vocabulary map): every
    # piece of every training reply, the special tokens, and nothing the tokenizer lacks
    allowed = set(reply_vocabulary.load(out) or [])
    replies = tokenizer([e.target for e in load_task("chat", chat_data, 0).train])["input_ids"]
    assert {0, 1, 2} | {i for ids in replies for i in ids} <= allowed
    assert allowed <= set(range(len(tokenizer)))
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    ids = tokenizer(["Ann: omg yes 😂\nreply as Ben:"], return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[0] == 1 and generated.shape[1] > 1


def test_loss_goes_down(chat_data: Path, tmp_path: Path) -> None:
    out = train(quick(chat_data, tmp_path / "m", max_steps=30, eval_every=15, log_every=5))
    val = [r["val_loss"] for r in metric_lines(out) if "val_loss" in r]
    assert val[-1] < val[0]


def test_resume_gives_the_same_model_as_an_uninterrupted_run(
    chat_data: Path, tmp_path: Path
) -> None:
    # dropout on, so the restored RNG state matters as much as weights and optimizer
    settings = {"max_steps": 8, "checkpoint_every": 3, "eval_every": 4, "dropout": 0.1}
    whole = train(quick(chat_data, tmp_path / "whole", **settings))

    class Interrupt(Exception):
        pass

    def stop_at_5(step: int, total: int) -> None:
        if step == 5:
            raise Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        train(quick(chat_data, out, **settings), on_step=stop_at_5)
    assert not out.exists()  # an interrupted run never looks finished
    assert [p.name for p in (partial_dir(out) / "checkpoints").iterdir()] == ["step-00000003"]

    train(quick(chat_data, out, resume=True, **settings))

    a, b = weights(whole), weights(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert metric_lines(whole) == metric_lines(out)


def test_resume_refuses_changed_settings(chat_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"

    def boom(step: int, total: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(quick(chat_data, out, checkpoint_every=2), on_step=boom)
    with pytest.raises(InputError, match=r"different settings.*learning_rate"):
        train(quick(chat_data, out, checkpoint_every=2, resume=True, learning_rate=5e-3))


def test_early_stopping_ends_training_and_keeps_the_best(chat_data: Path, tmp_path: Path) -> None:
    # a min_delta no real improvement can beat: every evaluation after the first is "worse"
    out = train(
        quick(chat_data, tmp_path / "m", max_steps=40, eval_every=2, patience=2, min_delta=100.0)
    )
    info = json.loads((out / "friendbot.json").read_text())
    assert info["metrics"]["stopped_early"] is True
    assert info["metrics"]["steps"] == 6  # evals at 2 (best), 4 and 6 (no improvement)
    assert info["metrics"]["best_step"] == 2
    # the saved weights are the best ones (step 2), not the last ones (step 6)
    val = {r["step"]: r["val_loss"] for r in metric_lines(out) if "val_loss" in r}
    saved = evaluate_loss(out, chat_data, "validation")
    assert saved == pytest.approx(val[2], rel=1e-4)
    assert saved != pytest.approx(val[6], rel=1e-3)


def test_lora_saves_merged_weights_that_load_plainly(chat_data: Path, tmp_path: Path) -> None:
    out = train(quick(chat_data, tmp_path / "m", lora=True, lora_r=4, learning_rate=1e-2))
    assert not (out / "adapter_config.json").exists()
    info = json.loads((out / "friendbot.json").read_text())
    assert info["lora"] == {"merged": True, "r": 4, "targets": "q,k,v,o"}
    names = weights(out).keys()
    assert not [n for n in names if "lora" in n]


def test_lora_adapter_only_loads_through_its_base(
    chat_data: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    from transformers import AutoModelForSeq2SeqLM

    out = train(
        quick(
            chat_data,
            tmp_path / "adapter",
            base_model=str(tiny_model_dir),
            lora=True,
            merge_lora=False,
            learning_rate=1e-2,
        )
    )
    assert (out / "adapter_config.json").is_file()
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).state_dict()
    merged = AutoModelForSeq2SeqLM.from_pretrained(out)  # transformers applies the adapter
    changed = [k for k, v in merged.state_dict().items() if "lora_B" in k and v.abs().sum() > 0]
    assert changed, "the adapter was trained"
    assert base.keys() <= {k.replace("base_layer.", "") for k in merged.state_dict()}


def test_no_merge_is_refused_for_tiny(chat_data: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--no-merge"):
        quick(chat_data, tmp_path / "m", lora=True, merge_lora=False)


@pytest.mark.parametrize(
    ("task", "data", "prompt"),
    [
        ("paraphrase", FIXTURES / "paws_sample.tsv", "Paraphrase: The cat sat on the mat ."),
        ("joke", FIXTURES / "jokes_sample.csv", "Tell me a joke about pizza"),
    ],
)
def test_task_models_train_on_their_files(
    task: str, data: Path, prompt: str, tmp_path: Path
) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = train(quick(data, tmp_path / task, task=task, token_budget=256, max_source_length=None))
    info = json.loads((out / "friendbot.json").read_text())
    assert info["task"] == task
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    ids = tokenizer([prompt], return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=5).shape[1] > 1


def test_paws_keeps_label_1_pairs_in_both_directions() -> None:
    data = load_paraphrase(FIXTURES / "paws_sample.tsv", seed=0)
    pairs = len(data.train) + len(data.validation)
    assert pairs == 2 * 20  # 20 rows with label 1, each both ways
    sources = {e.source for e in data.train + data.validation}
    assert "Paraphrase: The river flows north through the old town ." not in sources  # label 0
    first = next(e for e in data.train if "cat sat" in e.source and e.source.endswith("door ."))
    assert first.target == "Near the door , the cat sat on the mat ."


def test_jokes_get_plain_and_topic_prompts() -> None:
    data = load_jokes(FIXTURES / "jokes_sample.csv", seed=0)
    bike = next(e for e in data.train + data.validation if "bicycle" in e.target)
    assert bike.source == "Tell me a joke about bicycle"
    assert bike.alt == "Tell me a joke"


def test_jokes_csv_without_joke_column(tmp_path: Path) -> None:
    bad = tmp_path / "jokes.csv"
    bad.write_text("ID,Text\n1,hello\n")
    with pytest.raises(InputError, match="no `Joke` column"):
        load_jokes(bad, seed=0)


# --- bad inputs -----------------------------------------------------------------------------


def test_missing_dataset_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such dataset directory"):
        train(quick(tmp_path / "nope", tmp_path / "m"))


def test_empty_train_split(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=0)
    with pytest.raises(InputError, match=r"train\.parquet: no examples"):
        train(quick(data, tmp_path / "m"))


def test_existing_output_needs_overwrite(chat_data: Path, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(InputError, match="already exists"):
        train(quick(chat_data, tmp_path / "m"))


def test_resume_without_checkpoint(chat_data: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        train(quick(chat_data, tmp_path / "m", resume=True))


def test_cli_unknown_base_model_offline_is_one_line(chat_data: Path, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = ["--data", str(chat_data), "--out", str(tmp_path / "m")]
    result = subprocess.run(
        [*TRAIN, *where, "--base-model", "no-such-org/no-such-model"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1
    assert errors[0].startswith("friendbot: error: --base-model no-such-org/no-such-model")
    assert "Traceback" not in result.stderr


def test_offline_hub_id_fails_at_once_in_one_line(chat_data: Path, tmp_path: Path) -> None:
    """No network (the hub's port refuses): one line, no retries, no OUT.partial/ left."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "HF_ENDPOINT": f"http://127.0.0.1:{port}",
    }
    out = tmp_path / "m"
    result = subprocess.run(
        [
            *TRAIN,
            "--data",
            str(chat_data),
            "--out",
            str(out),
            "--base-model",
            "google/flan-t5-base",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 2, result.stderr
    # before: ~50 s of "Retrying in Ns" and some 20 duplicated warnings, then the error
    assert "Retrying" not in result.stderr and "Traceback" not in result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("friendbot: error: --base-model google/flan-t5-base: ")
    assert f"127.0.0.1:{port} cannot be reached" in lines[0]
    assert not partial_dir(out).exists() and not out.exists()


@pytest.mark.parametrize("where", ["./no/such/model", "/no/such/model"])
def test_a_missing_local_base_model_is_no_such_directory(
    chat_data: Path, tmp_path: Path, where: str
) -> None:
    out = tmp_path / "m"
    with pytest.raises(InputError) as err:
        train(quick(chat_data, out, base_model=where))
    assert str(err.value) == f"--base-model {where}: no such directory"
    assert not partial_dir(out).exists()  # a failed run leaves no empty work area


def test_too_few_training_pairs_are_refused_unless_overridden(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=1)
    out = tmp_path / "m"

    with pytest.raises(InputError) as err:
        train(quick(data, out))  # used to make a "model" from one pair, with a warning

    assert str(err.value) == (
        f"{data}: 1 training pair(s); at least 20 are needed to learn anything worth serving "
        "(--min-examples N to train anyway)"
    )
    assert not out.exists() and not partial_dir(out).exists()
    assert train(quick(data, out, min_examples=1, max_steps=2)) == out


def test_min_examples_is_a_train_option(chat_data: Path, tmp_path: Path) -> None:
    from training.cli import main

    where = ["--data", str(chat_data), "--out", str(tmp_path / "m")]
    with pytest.raises(SystemExit) as exit_:
        main(["train", *where, "--min-examples", "1000", "--no-progress"])
    assert exit_.value.code == 2
    with pytest.raises(InputError, match="--min-examples 0: must be positive"):
        quick(chat_data, tmp_path / "m", min_examples=0)


class _Planted:
    """Unpickling this creates ``marker``: what a planted pickle could do instead of that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_resume_never_unpickles_planted_code(chat_data: Path, tmp_path: Path) -> None:
    import pickle

    out = tmp_path / "m"
    settings = {"max_steps": 6, "checkpoint_every": 3}

    def stop_at_4(step: int, total: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(quick(chat_data, out, **settings), on_step=stop_at_4)
    ckpt = partial_dir(out) / "checkpoints" / "step-00000003"
    marker = tmp_path / "code-ran"
    # the plant works: a full unpickle of it runs its code
    pickle.loads(pickle.dumps(_Planted(marker)))
    assert marker.exists()
    marker.unlink()
    # Accelerate's file names, where its load_state unpickled with weights_only=False
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl", "scheduler.bin"):
        torch.save(_Planted(marker), ckpt / name)

    train(quick(chat_data, out, resume=True, **settings))
    assert not marker.exists()

    # a planted tensor file is refused in one line, its code not run
    with pytest.raises(KeyboardInterrupt):
        train(quick(chat_data, out, overwrite=True, **settings), on_step=stop_at_4)
    torch.save(_Planted(marker), ckpt / "optimizer.pt")
    with pytest.raises(InputError) as err:
        train(quick(chat_data, out, resume=True, overwrite=True, **settings))
    assert str(err.value).startswith(f"{ckpt / 'optimizer.pt'}: not a plain tensor file")
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_train_tokens_caps_the_planned_steps(tmp_path: Path) -> None:
    """A large chat stops at the token cap, a small one at its epochs (0: no cap)."""
    from training.model.loop import DataOrder

    class Fixed(DataOrder):
        """Three epochs of four steps of 100 real tokens each."""

        def __init__(self) -> None:
            pass

        def epoch(self, epoch: int):  # type: ignore[no-untyped-def]
            return [], [[[0]]] * 4, [100] * 4

    order = Fixed()
    assert order.planned_steps(3, 0) == 12
    assert order.planned_steps(3, 250) == 3  # the step that passes 250 tokens is the last
    assert order.planned_steps(3, 700) == 7
    assert order.planned_steps(3, 10_000) == 12  # a small chat ends with its epochs
    capped = TrainConfig(data=tmp_path, out=tmp_path / "m", train_tokens=250)
    assert capped.train_tokens == 250  # no preset caps tokens: the tiny one has a time budget
    assert TrainConfig(data=tmp_path, out=tmp_path / "m", base_model="t5-small").train_tokens == 0
    with pytest.raises(InputError, match="--train-tokens -1"):
        TrainConfig(data=tmp_path, out=tmp_path / "m", train_tokens=-1)


def test_validation_runs_at_the_interval_and_the_end_but_not_twice_in_a_row() -> None:
    from training.model.loop import validation_due

    config = TrainConfig(data=Path("d"), out=Path("o"), eval_every=200)
    due = [s for s in range(1, 807) if validation_due(s, 806, config)]
    assert due == [200, 400, 600, 806]  # 800 is six steps before the end: skipped
    assert [s for s in range(1, 901) if validation_due(s, 900, config)] == [200, 400, 600, 800, 900]


def test_validation_uses_a_fixed_sample_of_at_most_eval_examples() -> None:
    from training.model.finetune import validation_sample

    items = list(range(5000))
    sample = validation_sample(items, 1000, seed=0)
    assert len(sample) == 1000 and sample == sorted(sample) and len(set(sample)) == 1000
    assert sample == validation_sample(items, 1000, seed=0)
    assert sample != validation_sample(items, 1000, seed=1)
    assert validation_sample(items[:800], 1000, seed=0) == items[:800]
    assert validation_sample(items, 0, seed=0) == items
    tiny = TrainConfig(data=Path("d"), out=Path("o"))
    flan = TrainConfig(data=Path("d"), out=Path("o"), base_model="google/flan-t5-base")
    assert (tiny.eval_examples, flan.eval_examples) == (1000, 0)
    with pytest.raises(InputError, match="--eval-examples -1"):
        TrainConfig(data=Path("d"), out=Path("o"), eval_examples=-1)


def test_step_timings_are_one_line_the_budget_bench_reads_back() -> None:
    from bench import train_budget
    from training.model.finetune import Phases

    phases = Phases()
    with phases("start"):
        pass
    with phases("next-speaker scorer"):
        sum(range(10_000))
    stderr = f"2026-12-02 06:00:00,000 INFO training.model.finetune: {phases.line()}\n"
    timings = train_budget.phases(stderr)
    assert list(timings) == ["start", "next-speaker scorer"]
    assert all(len(pair) == 2 and min(pair) >= 0 for pair in timings.values())
    assert train_budget.phases("no timings: the run failed\n") == {}
