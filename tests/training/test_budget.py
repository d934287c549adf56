"""The tiny model's time budget: how many steps fit, and that timing them changes nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.fixtures.chatdata import write_dataset
from tests.training.test_finetune import quick, weights
from training.errors import InputError
from training.model import budget, finetune
from training.model.config import TINY_TIME_BUDGET, TrainConfig
from training.model.finetune import partial_dir, train
from training.model.loop import DataOrder


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("chat") / "data")


class Steps(DataOrder):
    """Epochs of 100 steps of ``tokens`` real tokens each (no data behind them)."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    def epoch(self, epoch: int):  # type: ignore[no-untyped-def]
        return [], [[[0]]] * 100, [self.tokens] * 100


def steps_for(order: DataOrder, planned: int, seconds_left: float, eval_every: int = 200) -> int:
    config = TrainConfig(data=Path("d"), out=Path("o"), eval_every=eval_every)
    validation = [object()]  # any validation split: its passes are part of the loop's time
    return budget.affordable_steps(
        config,
        None,
        order,
        planned,
        validation,
        None,
        0,
        2048,
        seconds_left,  # type: ignore[arg-type]
    )


def test_a_large_plan_gets_the_steps_the_rest_of_the_budget_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budget, "_time_steps", lambda *args: (0.5, 4.0))  # step, validation
    order = Steps(tokens=10_000)  # 1M tokens per epoch: worth timing
    # (300 s - 45 after the loop - 4 for the last validation) x the loop's share of it, at
    # 0.5 s per step + a validation every 200 steps
    assert steps_for(order, 1000, 300.0) == int(251 * budget.LOOP_SHARE / 0.52)
    assert steps_for(order, 300, 300.0) == 300  # the plan fits: its epochs end it
    assert steps_for(order, 1000, 30.0) == 1  # nothing left: one step, still a model


def test_small_plans_are_not_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> tuple[float, float]:
        raise AssertionError("timed a plan that fits any budget")

    monkeypatch.setattr(budget, "_time_steps", never)
    assert steps_for(Steps(tokens=100), 500, 1.0) == 500  # 50k tokens: under the threshold
    assert steps_for(Steps(tokens=10_000), 8, 1.0) == 8  # too few steps to time


def test_the_tiny_preset_has_the_budget_and_flan_t5_has_none(tmp_path: Path) -> None:
    tiny = TrainConfig(data=tmp_path, out=tmp_path / "m")
    assert tiny.time_budget == TINY_TIME_BUDGET and tiny.train_tokens == 0
    assert TrainConfig(data=tmp_path, out=tmp_path / "m", base_model="t5-small").time_budget == 0
    assert TrainConfig(data=tmp_path, out=tmp_path / "m", time_budget=0).time_budget == 0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InputError, match="--time-budget"):
            TrainConfig(data=tmp_path, out=tmp_path / "m", time_budget=bad)


@pytest.fixture
def one_second_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real timing runs (a throwaway model, steps, a validation pass: random numbers
    drawn), but reports one second per step, so the cut is known: the budget's seconds."""
    real = budget._time_steps

    def timed(*args: object) -> tuple[float, float]:
        real(*args)
        return 1.0, 0.0

    monkeypatch.setattr(budget, "_time_steps", timed)
    monkeypatch.setattr(budget, "MIN_TOKENS_TO_TIME", 0)
    monkeypatch.setattr(budget, "AFTER_LOOP_SECONDS", 0.0)
    monkeypatch.setattr(budget, "LOOP_SHARE", 1.0)
    monkeypatch.setattr(finetune.Phases, "elapsed", lambda self: 0.0)


@pytest.mark.usefixtures("one_second_steps")
def test_a_cut_run_records_its_steps_and_max_steps_repeats_it_exactly(
    chat_data: Path, tmp_path: Path
) -> None:
    cut = train(quick(chat_data, tmp_path / "cut", max_steps=None, time_budget=11.0))
    info = json.loads((cut / "friendbot.json").read_text())
    assert info["hyperparameters"]["max_steps"] == 11
    assert info["metrics"]["steps"] == 11
    again = train(quick(chat_data, tmp_path / "again", max_steps=11, time_budget=0.0))
    a, b = weights(cut), weights(again)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # the timing drew no number the run uses


@pytest.mark.usefixtures("one_second_steps")
def test_resume_continues_the_cut_plan_without_timing_again(
    chat_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"max_steps": None, "time_budget": 11.0, "checkpoint_every": 4}

    def stop_at_6(step: int, total: int) -> None:
        assert total == 11
        if step == 6:
            raise KeyboardInterrupt

    out = tmp_path / "m"
    with pytest.raises(KeyboardInterrupt):
        train(quick(chat_data, out, **settings), on_step=stop_at_6)
    assert (partial_dir(out) / "checkpoints").is_dir()

    def never(*args: object) -> tuple[float, float]:
        raise AssertionError("a resumed run timed its steps again")

    monkeypatch.setattr(budget, "_time_steps", never)
    train(quick(chat_data, out, resume=True, **settings))
    info = json.loads((out / "friendbot.json").read_text())
    assert info["metrics"]["steps"] == 11
