"""How many CPU threads a reply runs on: the fastest count, timed when the model loads.

A reply is batch-1 decoding: dozens of small matrix products per token, each split across the
threads and joined at a barrier. Whether a second thread pays depends on the machine, not on
the model, and no reading of the machine predicted it (BENCHMARKS.md, "Threads timed at load,
and best of four"): on one 2-core VM two idle threads answered in 0.7x the time of one; on
another 2-core VM, just as idle and whose two cores multiply large matrices 1.8x faster than
one, two threads made a flan-t5-small reply 2.3x *slower* (CTranslate2 473 vs 199 ms; torch 938
vs 827 ms); on a busy machine one thread won every time. So the engine does not guess from idle
cores: it times the same small test call with 1, 2 and 4 threads (as many as the process may
use) and keeps the fastest. The measurement reflects whatever else runs at that moment too,
which is what the replies will meet. Chosen again at every (re)load; ``INFERENCE_THREADS``
fixes it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

MAX_AUTO_THREADS = 4
"""CTranslate2's own default thread count (``intra_threads=0``): a batch-1 decoding step is too
small to split further with profit."""
ROUNDS = 2
"""Timed calls per thread count, interleaved, after one untimed call each (which also warms
the model up): one and two threads differed by 1.1-2.3x on the machines measured, beyond the
few percent the best of two moves by; every call adds to loading (flan-t5-base on HF: about
0.5 s)."""
TIE = 0.05
"""More threads must be this much faster to be chosen: a tie leaves the cores to others."""


def thread_options(cores: int | None = None) -> list[int]:
    """The counts worth timing: 1, 2, 4, ... up to the cores this process may run on."""
    cores = available_cores() if cores is None else cores
    options, n = [], 1
    while n <= min(cores, MAX_AUTO_THREADS):
        options.append(n)
        n *= 2
    return options


def fastest(trials: Mapping[int, Callable[[], object]], rounds: int = ROUNDS) -> int:
    """The thread count whose trial call is fastest (best of ``rounds``, interleaved).

    ``trials`` maps a thread count to a call that runs the test reply with that many threads.
    Each runs once untimed first. Fewer threads win unless more are TIE faster.
    """
    for trial in trials.values():
        trial()
    best = dict.fromkeys(trials, float("inf"))
    for _ in range(rounds):
        for n, trial in trials.items():
            start = time.perf_counter()
            trial()
            best[n] = min(best[n], time.perf_counter() - start)
    chosen = min(trials)
    for n in sorted(trials):
        if best[n] < best[chosen] * (1 - TIE):
            chosen = n
    log.info(
        "threads per reply: %d (test call %s)",
        chosen,
        ", ".join(f"{n} thread{'s' * (n > 1)} {best[n] * 1000:.0f} ms" for n in sorted(trials)),
    )
    return chosen


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
