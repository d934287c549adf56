"""Progress that fits both a terminal and a journal.

On a terminal a tqdm bar is the friendliest thing; under systemd (stderr is the journal) a
bar writes a line per redraw, thousands of lines of carriage returns for one training run.
:func:`progress` draws the bar only when stderr is a terminal and otherwise logs one line
every ``every_s`` seconds with the same figures (done/total, percent, rate, postfix), plus a
last line at close.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0


class Progress(Protocol):
    """What callers use: count work done, show a few figures, finish."""

    def update(self, n: int = 1) -> None: ...
    def set(self, done: int) -> None: ...
    def set_postfix(self, **figures: Any) -> None: ...
    def close(self) -> None: ...


def progress(
    total: int | None,
    desc: str,
    *,
    initial: int = 0,
    unit: str = "it",
    enabled: bool = True,
    every_s: float = LOG_EVERY_S,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Progress:
    """A tqdm bar on a terminal, periodic log lines otherwise, nothing when not ``enabled``."""
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return _Silent()
    if _is_tty(stream):
        return _Bar(total, desc, initial, unit, stream)
    return _LogLines(total, desc, initial, unit, every_s, clock)


def quiet_hf_bars(stream: TextIO | None = None) -> None:
    """Turn off transformers' own bars ("Loading weights", "Writing model shards") unless
    ``stream`` (stderr) is a terminal.

    A bar is for a person watching; in a service log or a journal each one is a line of
    carriage-return noise. Process-wide, as transformers' switch is.
    """
    if _is_tty(stream if stream is not None else sys.stderr):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream: not a terminal
        return False


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set(self, done: int) -> None:
        pass

    def set_postfix(self, **figures: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Bar(_Silent):
    """tqdm, for a person watching."""

    def __init__(self, total: int | None, desc: str, initial: int, unit: str, stream: TextIO):
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            file=stream,
            dynamic_ncols=True,
            unit_scale=unit == "B",
        )

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set(self, done: int) -> None:
        self.bar.update(done - self.bar.n)

    def set_postfix(self, **figures: Any) -> None:
        self.bar.set_postfix(**figures)

    def close(self) -> None:
        self.bar.close()


class _LogLines(_Silent):
    """One INFO line every ``every_s`` seconds (and one at the end), for a log or journal."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        initial: int,
        unit: str,
        every_s: float,
        clock: Callable[[], float],
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = self.initial = initial
        self.every_s, self.clock = every_s, clock
        self.started = self.last = clock()
        self.figures: dict[str, Any] = {}
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        if self.clock() - self.last >= self.every_s:
            self._line()

    def set_postfix(self, **figures: Any) -> None:
        self.figures = figures

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.done != self.initial:
                self._line()

    def _line(self) -> None:
        now = self.clock()
        self.last = now
        elapsed = now - self.started
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        done = f"{self.done}/{self.total}" if self.total else str(self.done)
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        extra = "".join(f", {key}={value}" for key, value in self.figures.items())
        log.info(
            "%s: %s %s%s, %.1f %s/s, %ds elapsed%s",
            self.desc, done, self.unit, percent, rate, self.unit, elapsed, extra,
        )  # fmt: skip
