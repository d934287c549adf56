"""Where `friendbot prepare`'s CPU time goes: per-phase thread CPU of one run, in-process.

Wraps the main functions of ``training.data`` with timers (thread CPU: the parquet writer
threads are timed in their own threads, so phases do not double-count them), runs the real
CLI, and prints one line per phase plus the collector's own time and the page faults. With
``--workers 2`` the decoding happens in worker processes: the extraction lines then stay
empty and the workers' totals are printed from their resource usage.

    python bench/prepare_profile.py EXPORT --out DIR --workers 1

The wrapped names are internal: when one moves, this script fails loudly at start-up.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's code
_started = (time.perf_counter(), time.process_time())
_phases: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
_lock = threading.Lock()


def _wrap(owner: object, name: str, label: str) -> None:
    inner = getattr(owner, name)

    def timed(*args: object, **kwargs: object) -> object:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            with _lock:
                phase = _phases[label]
                phase[0] += time.perf_counter() - wall
                phase[1] += time.thread_time() - cpu
                phase[2] += 1

    setattr(owner, name, timed)


def _collector_timer() -> dict[str, float]:
    spent = {"seconds": 0.0, "start": 0.0, "collections": 0}

    def callback(phase: str, _info: dict) -> None:
        if phase == "start":
            spent["start"] = time.thread_time()
        else:
            spent["seconds"] += time.thread_time() - spent["start"]
            spent["collections"] += 1

    gc.callbacks.append(callback)
    return spent


def main() -> None:
    import pyarrow.parquet as pq

    import training.cli as cli
    from training.data import columns, export, normalize, prepare

    _phases["start-up and imports"] = [
        time.perf_counter() - _started[0],
        time.process_time() - _started[1],
        1,
    ]
    for owner, name, label in [
        (normalize, "_decode_lean", "  msgspec decoding"),
        (columns.Tokens, "fields", "  gathering raw tokens"),
        (export, "extract_chunk", " extracting chunks (decode + fates)"),
        (export, "to_table", " Arrow columns and text rules"),
        (prepare, "_read", "reading (scan + the two above + dedup)"),
        (prepare, "dedup_and_order", " de-duplicating and ordering"),
        (prepare, "_sessions", "sessions"),
        (prepare, "_check_speakers", "speakers"),
        (prepare, "_splits", "splits"),
        (prepare, "_eligible", "eligible responses"),
        (prepare, "window_lines", " turn lines"),
        (prepare, "build_pairs", " pairs"),
        (prepare, "_write_pairs", "pairs and parquet (main thread)"),
        (pq.ParquetWriter, "write_table", "parquet writer threads"),
    ]:
        _wrap(owner, name, label)
    collector = _collector_timer()
    sys.argv = ["friendbot", "prepare", *sys.argv[1:]]
    try:
        cli.main()
    except SystemExit as exc:
        if exc.code:
            raise
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\n{'phase (thread CPU s, wall s, calls)':45} {'CPU':>6} {'wall':>6} {'calls':>6}")
    for label, (wall, cpu, calls) in _phases.items():
        print(f"{label:45} {cpu:6.2f} {wall:6.2f} {calls:6}")
    print(f"{'cycle collector':45} {collector['seconds']:6.2f} {'':6} {collector['collections']:6}")
    print(
        f"this process: {own.ru_utime:.2f} user + {own.ru_stime:.2f} sys CPU s, "
        f"{own.ru_minflt:,} page faults; workers: {workers.ru_utime:.2f} + "
        f"{workers.ru_stime:.2f} CPU s, {workers.ru_minflt:,} page faults; "
        f"load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
