"""How many processes ``prepare`` should decode a large export with: one per core free now.

Decoding processes pay off only on free cores; on a busy machine they compete with the
scanning process and with each other. The 1-minute load average alone is a poor judge of
"free": it trails the machine by a minute, so right after another heavy job ends (the
previous run of a benchmark, a finished training) it still reads as busy and a read that
could have had every core ran on one (on a quiet two-core machine, a load average of 0.6
meant one process and twice the reading time). Linux also says how many tasks are runnable
at this instant (``/proc/loadavg``'s fourth field); the smaller of the two readings is what
other work will take from us, and a few samples a millisecond apart smooth the snapshot.
"""

from __future__ import annotations

import os
import statistics
import time

MAX_WORKERS = 4  # beyond this the single scanning process is the bottleneck
_SAMPLES = 5


def decoding_workers(cores: int, load_average: float | None, runnable_now: float | None) -> int:
    """Processes to decode with: the cores others leave free, rounded; 1 means no pool.

    ``load_average`` is the 1-minute average, ``runnable_now`` the tasks runnable right now
    besides this process (None where the system does not say). A pool of one worker only
    adds transfers, so anything below two free cores reads serially.
    """
    readings = [r for r in (load_average, runnable_now) if r is not None]
    busy = min(readings) if readings else 0.0
    free = int(cores - busy + 0.5)
    return min(MAX_WORKERS, free) if free >= 2 else 1


def auto_workers() -> int:
    """:func:`decoding_workers` for this machine now."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return decoding_workers(os.cpu_count() or 1, load, _runnable_others())


def _runnable_others() -> float | None:
    """Tasks runnable right now other than this one (median of a few samples; Linux only)."""
    samples = []
    for _ in range(_SAMPLES):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                running = f.read().split()[3].split("/")[0]
            samples.append(int(running) - 1)  # this process is running while it reads
        except (OSError, IndexError, ValueError):
            return None
        time.sleep(0.001)
    return float(statistics.median(samples))
