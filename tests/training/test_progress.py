"""training.progress: a bar on a terminal, a bounded number of log lines elsewhere."""

from __future__ import annotations

import io
import logging

import pytest

from training.progress import progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_without_a_terminal_a_long_loop_logs_a_line_every_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, stream = FakeClock(), io.StringIO()  # StringIO.isatty() is False: a journal
    caplog.set_level(logging.INFO, logger="training.progress")
    bar = progress(100_000, "training", unit="step", every_s=30, stream=stream, clock=clock)
    for step in range(100_000):  # 100,000 updates over 1,000 simulated seconds
        clock.now += 0.01
        bar.update(1)
        if step % 1000 == 0:
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    bar.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "training.progress"]
    # one line per 30 s of the 1,000 s, plus the last one: not one per update
    assert 33 <= len(lines) <= 35, len(lines)
    assert stream.getvalue() == ""  # nothing drawn
    assert lines[-1].startswith("training: 100000/100000 step (100%)")
    assert "100.0 step/s" in lines[-1] and "loss=" in lines[-1]


def test_a_quick_loop_logs_only_its_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="training.progress")
    bar = progress(50, "generating", stream=io.StringIO())
    for _ in range(50):
        bar.update()
    bar.close()
    bar.close()  # twice is harmless
    lines = [r.getMessage() for r in caplog.records if r.name == "training.progress"]
    assert len(lines) == 1 and lines[0].startswith("generating: 50/50 it (100%)")


def test_set_moves_to_an_absolute_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="training.progress")
    bar = progress(4096, "reading", unit="B", stream=io.StringIO(), every_s=1, clock=clock)
    clock.now += 2
    bar.set(2048)
    assert caplog.records[-1].getMessage().startswith("reading: 2048/4096 B (50%)")


def test_on_a_terminal_a_bar_is_drawn_and_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="training.progress")
    terminal = FakeTerminal()
    bar = progress(10, "training", unit="step", stream=terminal)
    for _ in range(10):
        bar.update()
    bar.close()
    assert "10/10" in terminal.getvalue()
    assert not [r for r in caplog.records if r.name == "training.progress"]


def test_disabled_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="training.progress")
    terminal = FakeTerminal()
    bar = progress(10, "training", enabled=False, stream=terminal)
    bar.update(10)
    bar.close()
    assert terminal.getvalue() == "" and not caplog.records
