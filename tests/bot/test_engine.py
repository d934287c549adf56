"""The reply engine: both backends generate the same tokens, and loading fails clearly."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.engine import DecodeOptions, ReplyEngine
from tests.conftest import CHAT_LINES
from training.errors import InputError
from training.formatting import encode_source, reply_prefix_ids
from training.model import reply_vocabulary
from training.model.ct2 import export_ct2
from training.model.model_dir import (
    CT2_DIRNAME,
    INFO_FILE,
    read_export_meta,
    read_info,
    write_info,
)

PROMPTS = [
    "Alice: hey guys whats up 😂\nBob: nothing much, you?",
    "Carol: lets go climbing tomorrow!!",
    "Dave: count me in. bringing coffee\nreply as Bob:",
    "Bob: ok ok fine",
    "Alice: lol sure, 10am?",
]
# The trained tiny model signs a reply to this as Bob when left to itself: forced to Carol:,
# both backends must still agree token for token.
OTHER_PERSONA = "Dave: count me in. bringing coffee\nreply as Carol:"
# Guards off: the agreement tests compare raw greedy paths (see _clear_prefix's logits).
GREEDY_FIXED = DecodeOptions(
    max_new_tokens=12,
    min_new_tokens=12,
    sample=False,
    no_repeat_ngram_size=0,
    repetition_penalty=1.0,
)
# Logit gap (nats) between the best and the second-best token beyond which int8 rounding must
# not change the greedy choice. Measured on the trained tiny model (x86 CPU): int8 flipped
# tokens only where the gap was under 0.2, and kept every choice with a gap of 0.25 or more.
CLEAR_CHOICE = 1.0


def _load(model_dir: Path, backend: str = "auto") -> ReplyEngine:
    """ReplyEngine.load on one thread: tiny models gain nothing from more, and on a shared
    2-core machine idle OpenMP threads spinning against other work slow tests down badly."""
    return ReplyEngine.load(model_dir, backend=backend, threads=1)


def _forced(engine: ReplyEngine, prompts: list[str]) -> list[int]:
    """How many ids each prompt's rows start with, forced: a persona's ``NAME:`` (which the
    min/max new-token limits do not count), 0 for a free prompt."""
    return [len(reply_prefix_ids(engine._tokenizer, p)) for p in prompts]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Torch's thread count is process-wide: set it for this module, then put it back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after a few dozen steps on the chat lines.

    Untrained, it answers every prompt with padding, which would make "both backends agree" a
    vacuous check; a little training makes greedy outputs differ from prompt to prompt.
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = tmp_path_factory.mktemp("trained-tiny")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    contexts = ["\n".join(CHAT_LINES[max(0, i - 3) : i]) for i in range(1, len(CHAT_LINES))]
    batch = tokenizer(contexts, text_target=CHAT_LINES[1:], padding=True, return_tensors="pt")
    labels = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    shutil.copy(tiny_model_dir / INFO_FILE, out)
    return out


@pytest.fixture
def model_copy(trained_dir: Path, tmp_path: Path) -> Path:
    """A private copy to export into: the shared fixtures must never gain a ct2/."""
    return Path(shutil.copytree(trained_dir, tmp_path / "model"))


# --- Hugging Face backend ---------------------------------------------------------------------


def test_hf_generate_returns_texts_per_prompt(tiny_model_dir: Path) -> None:
    engine = _load(tiny_model_dir, backend="hf")

    out = engine.generate(PROMPTS[:3], max_new_tokens=6, num_return_sequences=2, seed=0)

    assert engine.backend == "hf"
    assert engine.model_dir == tiny_model_dir.resolve()
    assert engine.info == read_info(tiny_model_dir)
    assert engine.task == "chat"
    assert engine.max_source_length == 512
    assert len(out) == 3
    assert all(len(replies) == 2 and all(isinstance(r, str) for r in replies) for replies in out)
    assert engine.generate([]) == []


def test_hf_decodes_without_special_tokens(trained_dir: Path) -> None:
    engine = _load(trained_dir, backend="hf")

    ids = engine.generate_ids(PROMPTS, GREEDY_FIXED)
    texts = engine.generate(
        PROMPTS,
        sample=False,
        max_new_tokens=12,
        min_new_tokens=12,
        no_repeat_ngram_size=0,
        repetition_penalty=1.0,
    )

    tokenizer = engine._tokenizer
    expected = [[tokenizer.decode(row, skip_special_tokens=True).strip()] for [row] in ids]
    assert texts == expected
    assert [len(row) for [row] in ids] == [12 + n for n in _forced(engine, PROMPTS)]
    assert len({tuple(row) for [row] in ids}) > 1, "greedy replies should depend on the prompt"
    assert not any("<pad>" in t or "</s>" in t for [t] in texts)


def test_seed_makes_sampling_repeatable(trained_dir: Path) -> None:
    engine = _load(trained_dir, backend="hf")
    opts = DecodeOptions(max_new_tokens=10, min_new_tokens=10, temperature=1.5, top_p=1.0, seed=7)

    first = engine.generate_ids(PROMPTS, opts)
    again = engine.generate_ids(PROMPTS, opts)
    other = engine.generate_ids(PROMPTS, replace(opts, seed=8))

    assert first == again
    assert first != other


def test_greedy_with_several_sequences_returns_distinct_beams(trained_dir: Path) -> None:
    engine = _load(trained_dir, backend="hf")

    out = engine.generate_ids(
        PROMPTS[:2], DecodeOptions(max_new_tokens=8, sample=False, num_return_sequences=3)
    )

    assert [len(beams) for beams in out] == [3, 3]
    assert all(len({tuple(b) for b in beams}) == 3 for beams in out)


def test_max_source_length_from_friendbot_json_drops_oldest_lines(model_copy: Path) -> None:
    write_info(model_copy, {**read_info(model_copy), "max_source_length": 24})
    engine = _load(model_copy, backend="hf")
    tail = "Carol: lets go climbing tomorrow!!\nreply as Bob:"
    old_a = "\n".join(["Alice: hey guys whats up"] * 20)
    old_b = "\n".join(["Dave: count me in. bringing coffee"] * 20)

    truncated = engine.generate_ids([f"{old_a}\n{tail}", f"{old_b}\n{tail}"], GREEDY_FIXED)

    assert engine.info["max_source_length"] == 24
    assert engine.max_source_length == 24
    assert truncated[0] == truncated[1], "only the newest lines fit in 24 tokens"


def test_concurrent_calls_give_sequential_results(trained_dir: Path) -> None:
    engine = _load(trained_dir, backend="hf")
    expected = {p: engine.generate_ids([p], GREEDY_FIXED) for p in PROMPTS}
    results: dict[str, list[list[list[int]]]] = {}
    errors: list[BaseException] = []

    def worker(prompt: str) -> None:
        try:
            results[prompt] = engine.generate_ids([prompt], GREEDY_FIXED)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert results == expected


@pytest.mark.parametrize(
    "options",
    [
        {"max_new_tokens": 0},
        {"min_new_tokens": 5, "max_new_tokens": 4},
        {"num_return_sequences": 0},
        {"temperature": 0.0},
        {"top_p": 0.0},
        {"top_k": -1},
    ],
)
def test_invalid_decode_options_are_rejected(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DecodeOptions(**options)


# --- Loading errors --------------------------------------------------------------------------


def test_missing_model_dir_is_one_line_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(InputError) as err:
        _load(missing)
    message = str(err.value)
    assert message.startswith(str(missing))
    assert "\n" not in message


def test_dir_without_a_model_is_input_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"no config\.json"):
        _load(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        _load(tmp_path / "notes.txt")


def test_broken_weights_are_one_line_input_error(model_copy: Path) -> None:
    (model_copy / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError) as err:
        _load(model_copy, backend="hf")
    assert "cannot load the model" in str(err.value)
    assert "\n" not in str(err.value)


def test_without_its_tokenizer_vocabulary_a_model_is_refused(model_copy: Path) -> None:
    # AutoTokenizer used to fall back to a 4-token vocabulary here, and the bot answered "..."
    (model_copy / "tokenizer.json").unlink()
    for chat in (True, False):
        with pytest.raises(InputError) as err:
            ReplyEngine.load(model_copy, backend="hf", threads=1, chat=chat)
        assert "no tokenizer vocabulary" in str(err.value) and "\n" not in str(err.value)


def test_a_chat_model_needs_friendbot_json_a_task_model_does_not(model_copy: Path) -> None:
    (model_copy / INFO_FILE).unlink()
    # the source length used to become 512 silently, whatever the model was trained on
    with pytest.raises(InputError, match=r"no friendbot\.json, so its prompt lengths"):
        _load(model_copy)
    task = ReplyEngine.load(model_copy, backend="hf", threads=1, chat=False)
    assert (task.task, task.info, task.max_source_length) == (None, {}, 512)


def test_a_task_model_is_not_served_as_the_chat_model(model_copy: Path) -> None:
    write_info(model_copy, {**read_info(model_copy), "task": "joke"})
    with pytest.raises(InputError, match="a joke model, not a chat model"):
        _load(model_copy)
    assert ReplyEngine.load(model_copy, backend="hf", threads=1, chat=False).task == "joke"


def test_unknown_backend_is_input_error(tiny_model_dir: Path) -> None:
    with pytest.raises(InputError, match="unknown backend"):
        _load(tiny_model_dir, backend="onnx")


# --- CTranslate2 -----------------------------------------------------------------------------


def test_export_writes_a_complete_ct2_dir(model_copy: Path) -> None:
    target = export_ct2(model_copy)

    assert target == model_copy / CT2_DIRNAME
    names = {p.name for p in target.iterdir()}
    assert {"model.bin", "config.json", "tokenizer.json", "friendbot-ct2.json"} <= names
    assert json.loads((target / "friendbot-ct2.json").read_text())["quantization"] == "int8"
    assert [p.name for p in model_copy.iterdir() if p.name.startswith(".")] == []


def test_failed_export_keeps_the_previous_conversion(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ctranslate2.converters import TransformersConverter

    export_ct2(model_copy)
    before = (model_copy / CT2_DIRNAME / "model.bin").read_bytes()

    def half_then_fail(self: object, output_dir: str, **kwargs: object) -> str:
        Path(output_dir).mkdir()
        (Path(output_dir) / "model.bin").write_bytes(b"half")
        raise ValueError("converter blew up\nwith a second line")

    monkeypatch.setattr(TransformersConverter, "convert", half_then_fail)
    with pytest.raises(InputError) as err:
        export_ct2(model_copy)

    assert "converter blew up" in str(err.value) and "\n" not in str(err.value)
    assert (model_copy / CT2_DIRNAME / "model.bin").read_bytes() == before
    assert [p.name for p in model_copy.iterdir() if p.name.startswith(".")] == []


def test_export_rejects_bad_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(InputError, match="no such model directory"):
        export_ct2(tmp_path / "missing")
    with pytest.raises(InputError, match="unknown quantization"):
        export_ct2(tiny_model_dir, quantization="int3")
    assert not (tiny_model_dir / CT2_DIRNAME).exists()


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_ct2_greedy_matches_hf_token_for_token(model_copy: Path, quantization: str) -> None:
    hf = _load(model_copy, backend="hf")
    assert not _unforced(hf, OTHER_PERSONA).startswith("Carol:")  # the prefix is doing work
    prompts = [*PROMPTS, OTHER_PERSONA]
    fixed_hf = hf.generate_ids(prompts, GREEDY_FIXED)
    # stops at eos on its own
    free = DecodeOptions(
        max_new_tokens=20, sample=False, no_repeat_ngram_size=0, repetition_penalty=1.0
    )
    free_hf = hf.generate_ids(prompts, free)

    export_ct2(model_copy, quantization=quantization)
    ct2 = _load(model_copy, backend="ct2")
    fixed_ct2 = ct2.generate_ids(prompts, GREEDY_FIXED)
    free_ct2 = ct2.generate_ids(prompts, free)

    assert ct2.backend == "ct2"
    assert len({tuple(row) for [row] in fixed_hf}) > 1
    if quantization == "float32":  # same arithmetic: every token must agree
        assert fixed_ct2 == fixed_hf
        assert free_ct2 == free_hf
    else:
        # int8 rounding moves logits by a little, so it may flip a near tie; after a flip the
        # two continuations differ legitimately. Every token HF chose by a clear margin before
        # the first near tie must agree, and those must be most of the tokens (not vacuous).
        clear = [
            _clear_prefix(hf, prompt, row) for prompt, [row] in zip(prompts, fixed_hf, strict=True)
        ]
        for n, [a], [b] in zip(clear, fixed_ct2, fixed_hf, strict=True):
            assert a[:n] == b[:n]
        assert min(clear) >= 1 and sum(clear) >= 0.5 * sum(len(r) for [r] in fixed_hf), clear
    assert ct2.generate(
        PROMPTS[:2],
        sample=False,
        max_new_tokens=20,
        no_repeat_ngram_size=0,
        repetition_penalty=1.0,
    ) == [[hf._tokenizer.decode(row, skip_special_tokens=True).strip()] for [row] in free_ct2[:2]]


def _clear_prefix(hf: ReplyEngine, prompt: str, tokens: list[int]) -> int:
    """How many of HF's greedy ``tokens`` were chosen by at least CLEAR_CHOICE nats.

    Teacher-forces the tokens through the HF model and counts positions until the first
    where the best and second-best logits (eos excluded: GREEDY_FIXED forbids ending) are
    closer than that. A persona reply's forced ``NAME:`` ids were not chosen: they count as clear.
    """
    import torch

    model, tokenizer = hf._impl.model, hf._tokenizer
    forced = len(reply_prefix_ids(tokenizer, prompt))
    source = torch.tensor([encode_source(tokenizer, prompt, hf.max_source_length)])
    start = model.generation_config.decoder_start_token_id
    decoder = torch.tensor([[start, *tokens[:-1]]])
    with torch.no_grad():
        logits = model(input_ids=source, decoder_input_ids=decoder).logits[0].float()
    logits[:, tokenizer.eos_token_id] = -float("inf")
    best = logits.topk(2, dim=-1)
    assert best.indices[forced:, 0].tolist() == tokens[forced:]  # the greedy path HF generated
    gaps = [float("inf")] * forced + (best.values[forced:, 0] - best.values[forced:, 1]).tolist()
    return next((i for i, gap in enumerate(gaps) if gap < CLEAR_CHOICE), len(tokens))


def _unforced(hf: ReplyEngine, prompt: str) -> str:
    """The greedy reply of HF's model to ``prompt`` with no decoder prefix (as before it)."""
    import torch

    model, tokenizer = hf._impl.model, hf._tokenizer
    source = torch.tensor([encode_source(tokenizer, prompt, hf.max_source_length)])
    with torch.no_grad():
        out = model.generate(input_ids=source, max_new_tokens=12, do_sample=False, num_beams=1)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def test_a_persona_reply_starts_with_the_persona_on_both_backends(model_copy: Path) -> None:
    """Asked ``reply as NAME:``, every reply (greedy, sampled, scored, beams) starts with
    ``NAME:``, also where the model would sign another name; a free prompt is generated as
    the model would without a prefix."""
    context = "Carol: lets go climbing tomorrow!!\nAlice: lol sure, 10am?"
    personas = ["Alice", "Bob", "Carol", "Dave"]
    prompts = [f"{context}\nreply as {name}:" for name in personas]
    hf = _load(model_copy, backend="hf")
    unforced = [_unforced(hf, p) for p in prompts]
    assert sum(not u.startswith(f"{n}:") for u, n in zip(unforced, personas, strict=True)) >= 2
    assert hf.generate([context], sample=False, max_new_tokens=12) == [[_unforced(hf, context)]]
    export_ct2(model_copy, quantization="float32")
    ct2 = _load(model_copy, backend="ct2")
    tokenizer = hf._tokenizer
    scored_opts = DecodeOptions(max_new_tokens=12, num_return_sequences=2, seed=1)
    for engine in (hf, ct2):
        # mixed in one call: the free prompt keeps its own path, outputs stay in prompt order
        greedy = engine.generate([*prompts, context], sample=False, max_new_tokens=12)
        assert greedy[-1] == [_unforced(hf, context)], engine.backend
        sampled = engine.generate(prompts, num_return_sequences=3, seed=1, max_new_tokens=12)
        beams = engine.generate(prompts, sample=False, num_return_sequences=2, max_new_tokens=8)
        scored = engine.generate_scored(prompts, scored_opts)
        for i, name in enumerate(personas):
            texts = [*greedy[i], *sampled[i], *beams[i], *(t for t, _ in scored[i])]
            assert all(t.startswith(f"{name}:") for t in texts), (engine.backend, texts)
            assert all(-50 < lp <= 0 for _, lp in scored[i])
        for prompt, [row] in zip(prompts, engine.generate_ids(prompts, GREEDY_FIXED), strict=True):
            prefix = reply_prefix_ids(tokenizer, prompt)
            # the prefix counts towards no length limit: 12 new tokens after it
            assert row[: len(prefix)] == prefix and len(row) == len(prefix) + 12


def test_ct2_sampling_options_and_seed(model_copy: Path) -> None:
    export_ct2(model_copy)
    engine = _load(model_copy, backend="ct2")
    opts = DecodeOptions(
        max_new_tokens=10,
        min_new_tokens=10,
        temperature=1.5,
        top_p=1.0,
        top_k=0,
        seed=3,
        num_return_sequences=2,
    )

    first = engine.generate_ids(PROMPTS, opts)
    again = engine.generate_ids(PROMPTS, opts)
    other = engine.generate_ids(PROMPTS, replace(opts, seed=4))
    beams = engine.generate_ids(
        PROMPTS[:1], DecodeOptions(max_new_tokens=8, sample=False, num_return_sequences=3)
    )

    assert [len(r) for r in first] == [2] * len(PROMPTS)
    forced = _forced(engine, PROMPTS)
    assert all(len(seq) == 10 + n for r, n in zip(first, forced, strict=True) for seq in r)
    assert first == again
    assert first != other
    assert len({tuple(b) for b in beams[0]}) == 3
    # top-k larger than the tiny vocabulary is clamped, as HF does
    assert len(engine.generate(PROMPTS[:1], top_k=50_000)[0]) == 1


# --- Backend selection -----------------------------------------------------------------------


def test_auto_uses_ct2_when_exported(model_copy: Path) -> None:
    assert _load(model_copy).backend == "hf"
    export_ct2(model_copy)
    assert _load(model_copy).backend == "ct2"
    assert _load(model_copy, backend="hf").backend == "hf"


def test_auto_ignores_a_conversion_older_than_the_weights(
    model_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    export_ct2(model_copy)
    model_bin = model_copy / CT2_DIRNAME / "model.bin"
    weights = model_copy / "model.safetensors"
    stamp = model_bin.stat().st_mtime
    os.utime(weights, (stamp + 60, stamp + 60))  # retrained after the export

    with caplog.at_level(logging.WARNING, logger="bot.engine"):
        engine = _load(model_copy)

    assert engine.backend == "hf"
    assert "older than the model weights" in caplog.text
    with pytest.raises(InputError, match="older than the model weights"):
        _load(model_copy, backend="ct2")


def test_missing_ct2_falls_back_to_hf_or_fails_clearly_when_asked(model_copy: Path) -> None:
    assert _load(model_copy, backend="auto").backend == "hf"
    with pytest.raises(InputError) as err:
        _load(model_copy, backend="ct2")
    assert "export-ct2" in str(err.value) and "\n" not in str(err.value)


def test_corrupt_ct2_falls_back_to_hf(model_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    export_ct2(model_copy)
    (model_copy / CT2_DIRNAME / "model.bin").write_bytes(b"garbage")

    with caplog.at_level(logging.WARNING, logger="bot.engine"):
        engine = _load(model_copy)

    assert engine.backend == "hf"
    assert "failed to load" in caplog.text
    with pytest.raises(InputError, match="cannot load the CTranslate2 model"):
        _load(model_copy, backend="ct2")


def test_model_dir_through_a_symlink_is_resolved(model_copy: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(model_copy)
    assert _load(link, backend="hf").model_dir == model_copy.resolve()


# --- CLI -------------------------------------------------------------------------------------


def test_cli_export_ct2(model_copy: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from training.model import cli as model_cli

    app = typer.Typer()
    model_cli.register(app)
    runner = CliRunner()

    failed = runner.invoke(app, ["export-ct2", str(model_copy / "missing")])
    assert isinstance(failed.exception, InputError)  # bot.cli.main prints it as one line
    assert "no such model directory" in str(failed.exception)

    done = runner.invoke(app, ["export-ct2", str(model_copy), "--quantization", "float32"])
    assert done.exit_code == 0, done.output
    meta = json.loads((model_copy / CT2_DIRNAME / "friendbot-ct2.json").read_text())
    assert meta["quantization"] == "float32"
    assert str(model_copy / CT2_DIRNAME) in done.output
    assert "whole vocabulary" in done.output  # no reply_vocabulary.json: no map

    reply_vocabulary.save(range(40), [], model_copy)
    mapped = runner.invoke(app, ["export-ct2", str(model_copy)])
    assert mapped.exit_code == 0, mapped.output
    assert "replies over 40 pieces" in mapped.output
    assert (model_copy / CT2_DIRNAME / "vmap.txt").is_file()
    plain = runner.invoke(app, ["export-ct2", str(model_copy), "--no-vocabulary-map"])
    assert plain.exit_code == 0 and "whole vocabulary" in plain.output
    assert not (model_copy / CT2_DIRNAME / "vmap.txt").exists()


# --- Serving: run, chat and /reload load through the same checks ------------------------------


def test_reload_refuses_a_broken_model_and_keeps_serving(model_copy: Path, tmp_path: Path) -> None:
    import asyncio

    from bot.serving import ModelHolder, load_models
    from bot.settings import Settings

    current = tmp_path / "current"
    current.symlink_to(model_copy)
    settings = Settings(_env_file=None, model_dir=current, inference_backend="hf")
    holder = ModelHolder(lambda previous: load_models(settings, previous))
    served = holder.load()
    assert served.chat.model_dir == model_copy.resolve()

    broken = Path(shutil.copytree(model_copy, tmp_path / "broken"))
    (broken / "tokenizer.json").unlink()
    current.unlink()
    current.symlink_to(broken)  # as a promotion or a rollback would
    with pytest.raises(InputError, match="no tokenizer vocabulary") as err:
        asyncio.run(holder.reload())

    assert "\n" not in str(err.value)
    assert holder.current is served  # still answering with the model that worked
    with pytest.raises(InputError, match="no tokenizer vocabulary"):
        load_models(settings)  # `friendbot run` / `chat` start: refused the same way


def test_chat_command_with_a_broken_model_is_one_line(model_copy: Path, tmp_path: Path) -> None:
    """The installed console script, as a user runs it: rc 2 and one line, no traceback."""
    import subprocess
    import sys

    (model_copy / INFO_FILE).unlink()
    env = {
        **os.environ,
        "MODEL_DIR": str(model_copy),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "TELEGRAM_BOT_TOKEN": "",
    }
    result = subprocess.run(
        [str(Path(sys.executable).with_name("friendbot")), "chat"],
        input="hello\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 2, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert errors[-1].startswith(f"friendbot: error: {model_copy}: no friendbot.json")
    assert "Traceback" not in result.stderr


def _repeated_trigrams(row: list[int]) -> list[tuple[int, ...]]:
    grams = [tuple(row[i : i + 3]) for i in range(len(row) - 2)]
    return sorted({g for g in grams if grams.count(g) > 1})


def test_loop_guards_hold_on_both_backends(model_copy: Path) -> None:
    """Forced long replies (no early end) never repeat a token 3-gram with the default guards,
    on HF and on CTranslate2; without them the same model does loop (the test is not vacuous)."""
    forced = DecodeOptions(max_new_tokens=40, min_new_tokens=40, sample=False)
    unguarded = replace(forced, no_repeat_ngram_size=0, repetition_penalty=1.0)
    sampled = replace(forced, sample=True, seed=3, num_return_sequences=2)
    hf = _load(model_copy, backend="hf")
    export_ct2(model_copy, quantization="int8")
    ct2 = _load(model_copy, backend="ct2")
    for engine in (hf, ct2):
        assert engine.backend in ("hf", "ct2")
        for opts in (forced, sampled):
            groups = engine.generate_ids(PROMPTS, opts)
            rows = [row for group in groups for row in group]
            lengths = [
                len(r) - n for g, n in zip(groups, _forced(engine, PROMPTS), strict=True) for r in g
            ]
            assert lengths == [40] * len(rows), engine.backend
            assert [_repeated_trigrams(row) for row in rows] == [[]] * len(rows), engine.backend
        loose = [row for [row] in engine.generate_ids(PROMPTS, unguarded)]
        assert any(_repeated_trigrams(row) for row in loose), engine.backend
    # ``generate`` (the service's path) applies the same guards by default
    [[row]] = ct2.generate_ids(PROMPTS[:1], forced)
    assert ct2.generate(PROMPTS[:1], sample=False, max_new_tokens=40, min_new_tokens=40) == [
        [hf._tokenizer.decode(row, skip_special_tokens=True).strip()]
    ]


def test_scored_generation_returns_the_replies_with_log_prob_scores(model_copy: Path) -> None:
    """Best-of-k ranks the k samples of one batch by the score its backend computed while
    decoding: the texts are those ``generate`` gives, and each score is a log-probability.
    (The two backends' numbers are not on one scale, so they are only compared within one.)"""
    greedy = replace(GREEDY_FIXED, max_new_tokens=20, min_new_tokens=0)
    hf = _load(model_copy, backend="hf")
    export_ct2(model_copy, quantization="float32")
    ct2 = _load(model_copy, backend="ct2")
    sampled = DecodeOptions(max_new_tokens=12, num_return_sequences=4, seed=1)
    for engine in (hf, ct2):
        scored = engine.generate_scored(PROMPTS, greedy)
        texts = [
            [hf._tokenizer.decode(r, skip_special_tokens=True).strip()]
            for [r] in engine.generate_ids(PROMPTS, greedy)
        ]
        assert [[t for t, _ in g] for g in scored] == texts
        assert all(-50 < score < 0 for [(_, score)] in scored), engine.backend
        groups = engine.generate_scored(PROMPTS[:2], sampled)
        assert [len(g) for g in groups] == [4, 4]
        # <= 0: at temperature 0.5 with top-p, a reply of only certain tokens scores exactly 0
        assert all(-50 < score <= 0 for g in groups for _, score in g)


# --- the vocabulary map (export-ct2's ct2/vmap.txt from train's reply_vocabulary.json) ----------


def _export_with_reply_vocabulary(model_dir: Path, allowed: list[int]) -> ReplyEngine:
    reply_vocabulary.save(allowed, [], model_dir)
    export_ct2(model_dir)
    return _load(model_dir, backend="ct2")


def _ct2_pieces(model_dir: Path) -> list[str]:
    return json.loads((model_dir / CT2_DIRNAME / "shared_vocabulary.json").read_text())


def test_export_writes_the_map_train_saved_and_none_without_it(model_copy: Path) -> None:
    export_ct2(model_copy)  # a model trained before reply_vocabulary.json existed
    assert not (model_copy / CT2_DIRNAME / "vmap.txt").exists()
    assert read_export_meta(model_copy / CT2_DIRNAME)["vocabulary_map"] is None
    engine = _load(model_copy, backend="ct2")
    assert engine._impl.vmap_rows is None
    assert len(engine.generate_ids(PROMPTS[:1], GREEDY_FIXED)[0][0]) == 12

    allowed = [0, 1, 2, 10, 11, 12]
    engine = _export_with_reply_vocabulary(model_copy, allowed)
    pieces = _ct2_pieces(model_copy)
    lines = (model_copy / CT2_DIRNAME / "vmap.txt").read_text(encoding="utf-8").splitlines()
    # always allowed: the saved pieces; any other piece only when the prompt holds it
    assert lines[0] == "\t" + " ".join(pieces[i] for i in allowed)
    assert lines[1:] == [f"{p}\t{p}" for i, p in enumerate(pieces) if i not in allowed]
    assert read_export_meta(model_copy / CT2_DIRNAME)["vocabulary_map"] == len(allowed)
    assert engine._impl.vmap_rows == len(allowed)

    export_ct2(model_copy, vocabulary_map=False)  # asked for every piece
    assert not (model_copy / CT2_DIRNAME / "vmap.txt").exists()


def test_replies_keep_to_the_chat_pieces_and_the_prompt(model_copy: Path) -> None:
    """Greedy over a subset that holds every piece the whole vocabulary picked gives the same
    reply; a piece banned from the chat's set but present in the prompt stays possible; a
    banned piece that is not in the prompt never appears."""
    export_ct2(model_copy)
    whole = _load(model_copy, backend="ct2")
    tokenizer = whole._tokenizer
    every = range(len(_ct2_pieces(model_copy)))
    prompt = PROMPTS[2]
    in_prompt = set(encode_source(tokenizer, prompt, whole.max_source_length))
    [[reply]] = whole.generate_ids([prompt], GREEDY_FIXED)
    echoed, new = set(reply) & in_prompt, set(reply) - in_prompt
    assert echoed and new  # both cases below are real

    mapped = _export_with_reply_vocabulary(model_copy, [i for i in every if i not in echoed])
    assert mapped.generate_ids([prompt], GREEDY_FIXED) == [[reply]]

    mapped = _export_with_reply_vocabulary(model_copy, [i for i in every if i not in new])
    [[restricted]] = mapped.generate_ids([prompt], GREEDY_FIXED)
    [forced] = _forced(whole, [prompt])
    assert len(restricted) == 12 + forced and not set(restricted) & new
    sampled = mapped.generate_ids([prompt], DecodeOptions(max_new_tokens=12, top_k=20, seed=3))
    assert not set(sampled[0][0]) & new


def test_a_map_smaller_than_top_k_is_not_used_for_that_call(model_copy: Path) -> None:
    """CTranslate2 refuses a top-k larger than the rows it decodes over: the bot's default
    (top-k 50) on a chat of fewer pieces decodes over every row instead of failing."""
    engine = _export_with_reply_vocabulary(model_copy, list(range(10)))
    assert engine._impl.vmap_rows == 10
    bot_call = DecodeOptions(max_new_tokens=8, num_return_sequences=2)  # the bot's options
    assert bot_call.top_k > 10 and not engine._impl._use_vmap(bot_call)
    [candidates] = engine.generate_scored(PROMPTS[:1], bot_call)
    assert len(candidates) == 2 and all(-50 < score <= 0 for _, score in candidates)
    narrow = DecodeOptions(max_new_tokens=8, num_return_sequences=2, top_k=5)
    assert engine._impl._use_vmap(narrow)
    in_prompt = set(encode_source(engine._tokenizer, PROMPTS[0], engine.max_source_length))
    for row in engine.generate_ids(PROMPTS[:1], narrow)[0]:
        assert set(row) <= set(range(10)) | in_prompt


def test_a_garbled_reply_vocabulary_is_refused_naming_the_file(model_copy: Path) -> None:
    (model_copy / reply_vocabulary.VOCABULARY_FILE).write_text('{"format": 1, "token_ids": "x"}')
    with pytest.raises(InputError) as err:
        export_ct2(model_copy)
    assert reply_vocabulary.VOCABULARY_FILE in str(err.value) and "\n" not in str(err.value)
    assert not (model_copy / CT2_DIRNAME).exists()  # nothing half-written
    export_ct2(model_copy, vocabulary_map=False)  # the way out the message names
    assert (model_copy / CT2_DIRNAME / "model.bin").is_file()


def test_no_map_for_a_vocabulary_the_map_format_cannot_hold(tmp_path: Path) -> None:
    (tmp_path / "shared_vocabulary.json").write_text(json.dumps(["<pad>", "</s>", "a b", "c"]))
    assert reply_vocabulary.write_vmap(tmp_path, [0, 1, 3]) is None
    (tmp_path / "shared_vocabulary.json").write_text(json.dumps(["<pad>", "</s>", "c", "c"]))
    assert reply_vocabulary.write_vmap(tmp_path, [0, 1, 3]) is None
    assert not (tmp_path / "vmap.txt").exists()
    (tmp_path / "shared_vocabulary.json").write_text(json.dumps(["<pad>", "</s>", "▁c", "d"]))
    assert reply_vocabulary.write_vmap(tmp_path, [0, 1, 3, 99]) == tmp_path / "vmap.txt"
    assert (tmp_path / "vmap.txt").read_text().splitlines() == ["\t<pad> </s> d", "▁c\t▁c"]
    assert reply_vocabulary.always_allowed(tmp_path) == 3
