"""CTranslate2's thread count: as many as the machine has idle cores when the model loads."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import bot.engine as engine_module
from bot.engine import ReplyEngine, _cpu_ticks, _default_ct2_threads, _idle_cores
from training.model.ct2 import export_ct2


def _reader(*snapshots: tuple[int, int] | None) -> Callable[[], tuple[int, int] | None]:
    """A /proc/stat reader that returns ``snapshots`` one after the other."""
    it = iter(snapshots)
    return lambda: next(it)


@pytest.mark.parametrize(
    ("idle", "cores", "expected"),
    [
        (2.0, 2, 2),  # idle machine: both cores (two threads measured 0.7x of one there)
        (1.8, 2, 2),  # a logger thread or clock ticks do not cost the second thread
        (1.6, 2, 1),  # one core partly taken: a second thread would wait at every barrier
        (0.9, 2, 1),
        (0.0, 2, 1),  # loaded: still one thread
        (7.9, 4, 4),  # never more than the cores this process may use
        (3.0, 8, 3),
        (15.9, 16, 4),  # and never more than CTranslate2's own default, 4
    ],
)
def test_threads_follow_the_idle_cores(
    monkeypatch: pytest.MonkeyPatch, idle: float, cores: int, expected: int
) -> None:
    monkeypatch.setattr(engine_module, "_available_cores", lambda: cores)
    monkeypatch.setattr(engine_module, "_idle_cores", lambda: idle)

    assert _default_ct2_threads() == expected


def test_without_proc_stat_every_core_but_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "_available_cores", lambda: 4)
    monkeypatch.setattr(engine_module, "_idle_cores", lambda: None)

    assert _default_ct2_threads() == 3


def test_one_core_is_one_thread_without_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    def never() -> float:
        raise AssertionError("one core needs no sample")

    monkeypatch.setattr(engine_module, "_available_cores", lambda: 1)
    monkeypatch.setattr(engine_module, "_idle_cores", never)

    assert _default_ct2_threads() == 1


def test_idle_cores_are_the_idle_share_of_the_ticks_times_the_cpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module.os, "cpu_count", lambda: 2)
    # 100 ticks passed (both CPUs together), 90 of them idle: 1.8 cores idle
    assert _idle_cores(_reader((1000, 5000), (1090, 5100)), sample_s=0) == pytest.approx(1.8)
    assert _idle_cores(_reader((1000, 5000), (1000, 5100)), sample_s=0) == 0.0
    # unreadable, or no tick between the readings: unknown
    assert _idle_cores(_reader(None), sample_s=0) is None
    assert _idle_cores(_reader((1000, 5000), None), sample_s=0) is None
    assert _idle_cores(_reader((1000, 5000), (1000, 5000)), sample_s=0) is None


def test_cpu_ticks_reads_idle_and_iowait_of_the_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    stat.write_text("cpu  100 5 50 800 20 3 2 10 40 0\ncpu0 50 2 25 400 10 1 1 5 20 0\n")
    assert _cpu_ticks(stat) == (820, 990)

    stat.write_text("intr 12345\n")
    assert _cpu_ticks(stat) is None
    assert _cpu_ticks(tmp_path / "missing") is None


def test_the_engine_counts_idle_cores_only_when_inference_threads_is_unset(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    export_ct2(model)
    monkeypatch.setattr(engine_module, "_available_cores", lambda: 2)
    monkeypatch.setattr(engine_module, "_idle_cores", lambda: 2.0)

    assert ReplyEngine.load(model, backend="ct2")._impl.threads == 2

    def never() -> float:
        raise AssertionError("INFERENCE_THREADS given: nothing to count")

    monkeypatch.setattr(engine_module, "_idle_cores", never)
    assert ReplyEngine.load(model, backend="ct2", threads=1)._impl.threads == 1
