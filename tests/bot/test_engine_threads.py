"""Threads per reply: the fastest of 1, 2, 4 timed when the model loads (bot/threads.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

import pytest
import torch

import bot.engine as engine_module
from bot.engine import ReplyEngine
from bot.threads import ROUNDS, fastest, thread_options
from training.model.ct2 import export_ct2


@pytest.mark.parametrize(
    ("cores", "expected"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2]), (4, [1, 2, 4]), (16, [1, 2, 4])],
)
def test_options_are_powers_of_two_up_to_the_cores_and_four(
    cores: int, expected: list[int]
) -> None:
    assert thread_options(cores) == expected


def _sleeper(seconds: float, calls: list[int], n: int) -> Callable[[], None]:
    def trial() -> None:
        calls.append(n)
        time.sleep(seconds)

    return trial


def test_the_fastest_count_wins_after_one_untimed_call_each() -> None:
    calls: list[int] = []
    trials = {1: _sleeper(0.03, calls, 1), 2: _sleeper(0.001, calls, 2)}

    assert fastest(trials) == 2
    # one untimed call each, then the rounds interleaved (a slow moment hits both alike)
    assert calls == [1, 2] + [1, 2] * ROUNDS


def test_more_threads_must_be_clearly_faster() -> None:
    calls: list[int] = []
    # equal times: a tie keeps the fewest threads (the cores stay free for others)
    assert fastest({1: _sleeper(0.01, calls, 1), 2: _sleeper(0.01, calls, 2)}) == 1
    assert fastest({1: _sleeper(0.03, calls, 1), 2: _sleeper(0.02, calls, 2)}) == 2


def _fake_fastest(
    pick: int, seen: list[list[int]]
) -> Callable[[Mapping[int, Callable[[], object]]], int]:
    """A ``fastest`` that runs every trial once (they must work) and answers ``pick``."""

    def choose(trials: Mapping[int, Callable[[], object]]) -> int:
        seen.append(sorted(trials))
        for trial in trials.values():
            trial()
        return pick

    return choose


@pytest.fixture
def ct2_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    export_ct2(model)
    return model


def test_ct2_keeps_the_translator_of_the_measured_count(
    ct2_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[int]] = []
    monkeypatch.setattr(engine_module, "thread_options", lambda: [1, 2])
    monkeypatch.setattr(engine_module, "fastest", _fake_fastest(2, seen))

    engine = ReplyEngine.load(ct2_model, backend="ct2")

    assert seen == [[1, 2]]
    assert engine._impl.threads == 2
    assert engine._impl.translator is not None
    # the kept translator replies
    assert engine.generate(["Alice: hi"], max_new_tokens=4, seed=1)


def test_inference_threads_given_or_one_core_times_nothing(
    ct2_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[int]] = []
    monkeypatch.setattr(engine_module, "fastest", _fake_fastest(4, seen))

    assert ReplyEngine.load(ct2_model, backend="ct2", threads=3)._impl.threads == 3
    monkeypatch.setattr(engine_module, "thread_options", lambda: [1])
    assert ReplyEngine.load(ct2_model, backend="ct2")._impl.threads == 1
    assert seen == []


def test_hf_sets_torch_to_the_measured_count(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[int]] = []
    before = torch.get_num_threads()
    monkeypatch.setattr(engine_module, "thread_options", lambda: [1, 2])
    monkeypatch.setattr(engine_module, "fastest", _fake_fastest(1, seen))
    try:
        torch.set_num_threads(2)
        ReplyEngine.load(tiny_model_dir, backend="hf")
        assert seen == [[1, 2]]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


class _FakeTranslator:
    """Stands in for ctranslate2.Translator where the real one cannot run (a GPU)."""

    built: ClassVar[list[dict[str, object]]] = []

    def __init__(self, path: str, **kwargs: object) -> None:
        self.built.append(kwargs)

    def translate_batch(self, *args: object, **kwargs: object) -> list[object]:
        return []


def test_a_gpu_times_nothing_and_builds_one_translator(
    ct2_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctranslate2

    seen: list[list[int]] = []
    monkeypatch.setattr(engine_module, "fastest", _fake_fastest(2, seen))
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(ctranslate2, "Translator", _FakeTranslator)
    _FakeTranslator.built = []

    engine = ReplyEngine.load(ct2_model, backend="ct2")

    assert seen == []
    assert engine._impl.threads == 1
    assert [(b["device"], b["intra_threads"]) for b in _FakeTranslator.built] == [("cuda", 1)]
