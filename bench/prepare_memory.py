"""Benchmark: what ``prepare --memory`` costs next to a plain ``prepare`` of the same export.

Runs ``friendbot prepare EXPORT`` and ``friendbot prepare EXPORT --memory`` alternately, each in
a fresh subprocess, and prints wall and CPU seconds (user + system of the child: less
sensitive to a shared machine's load than wall time), peak RSS, the ratio of the two, and the
load average before each run. Without an export, a synthetic one is written first
(``bench/synthetic_export.py``; its 50-word vocabulary makes every word common, the worst
case for memory's word statistics and the case where the common-word cut leaves least).

    python bench/prepare_memory.py EXPORT.json [--prepare-args "--bot x"]
    python bench/prepare_memory.py --messages 100000 --workdir /tmp/fb-mem
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(export: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """One ``prepare`` in a child process: wall, CPU seconds and peak RSS (MB)."""
    load = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "training.cli", "prepare", str(export), "--out", str(out)]
    started = time.perf_counter()
    child = subprocess.Popen([*cmd, *extra], cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"prepare failed: {shlex.join(cmd + extra)}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "load": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", nargs="?", type=Path)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--prepare-args", default="", help="more prepare options, quoted")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fb-memory-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    export = args.export
    if export is None:
        sys.path.insert(0, str(REPO))
        from bench.synthetic_export import write_export

        export = work / f"synthetic-{args.messages}.json"
        if not export.exists():
            write_export(export, args.messages)
    extra = shlex.split(args.prepare_args)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    print(f"export: {export} ({export.stat().st_size / 1e6:.1f} MB)")
    print("| run | variant | wall s | CPU s | peak RSS MB | load before |")
    print("|---|---|---|---|---|---|")
    cpu: dict[str, list[float]] = {"plain": [], "memory": []}
    for i in range(args.runs):
        for name, flags in (("plain", []), ("memory", ["--memory"])):
            r = run(export, work / f"out-{name}", [*extra, *flags])
            cpu[name].append(r["cpu"])
            print(
                f"| {i + 1} | {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_mb']:.0f} "
                f"| {r['load']:.1f} |"
            )
    ratio = min(cpu["memory"]) / min(cpu["plain"])
    print(f"\n--memory costs {ratio:.1f}x the CPU time of a plain prepare (best of {args.runs})")


if __name__ == "__main__":
    main()
