"""How long `friendbot train` takes on a prepared chat, whole command: CPU seconds, wall, load.

Issue 12 asks that a 5,000-50,000-message chat train with the tiny defaults in at most five
minutes on two CPU cores. This runs the real command (a subprocess, so imports, tokenizer
training, encoding, validation passes and saving all count) once per setting, one after the
other on the same data, and prints per run: CPU seconds of the command (user + system, all
its threads), wall seconds, the load average before and after, the seconds outside the loop
(`before_loop_s`: wall minus the loop's own `train_seconds`, so saving counts too), steps, the
loop's tokens/s (validation passes included) and the best validation loss, then the
command's own line of step timings (`phases (s wall / CPU s): NAME W / C, ...`: start, read,
tokenizer, encode, model, loop, save and the scorers within it); wall minus their sum is the
interpreter and the imports.
On a shared machine compare runs of one invocation (ratios), not runs of different days.

    python bench/train_budget.py DATA_DIR                        # the defaults, one run
    python bench/train_budget.py DATA_DIR --max-steps 100 --threads 1,2
    python bench/train_budget.py DATA_DIR --set "--lr 2e-3" --set "--lr 1e-3"

Each `--set` is one run's extra `friendbot train` options (default: one run with none);
`--threads` multiplies them by thread counts (default: the command's own default).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = re.compile(r"phases \(s wall / CPU s\): (.+)")
PHASE = re.compile(r"([^,]+?) ([\d.]+) / ([\d.]+)(?:, |$)")


def phases(stderr: str) -> dict[str, list[float]]:
    """``train``'s one line of step timings: {step: [wall s, CPU s]}."""
    found = PHASES.search(stderr)
    if found is None:
        return {}
    return {m[1]: [float(m[2]), float(m[3])] for m in PHASE.finditer(found[1])}


def run_once(data: Path, out: Path, extra: list[str]) -> dict[str, object]:
    """One `friendbot train` in a subprocess; its CPU time from the children's rusage."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "training.cli", "train", "--data", str(data), "--out", str(out)]
    cmd += ["--base-model", "tiny", "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"train failed ({' '.join(extra)}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    metrics = json.loads((out / "friendbot.json").read_text())["metrics"]
    return {
        "options": " ".join(extra) or "(defaults)",
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "load": f"{load_before:.1f}-{os.getloadavg()[0]:.1f}",
        "before_loop_s": round(wall - metrics["train_seconds"], 1),
        "steps": metrics["steps"],
        "tokens": metrics["tokens"],
        "loop_tok_s": metrics["tokens_per_s"],
        "best_val": None
        if metrics["validation_loss"] is None
        else round(metrics["validation_loss"], 3),
        "best_step": metrics["best_step"],
        "phases_wall_cpu": phases(done.stderr),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="a `friendbot prepare` output directory")
    parser.add_argument("--set", action="append", default=[], help="extra train options")
    parser.add_argument("--threads", default="", help="comma-separated torch thread counts")
    parser.add_argument("--max-steps", type=int, default=0, help="fixed steps (0: defaults)")
    parser.add_argument("--keep", type=Path, help="keep the models under this directory")
    args = parser.parse_args()
    settings = [shlex.split(s) for s in args.set] or [[]]
    threads = [t for t in args.threads.split(",") if t] or [""]
    runs = [
        [
            *s,
            *(["--threads", t] if t else []),
            *(["--max-steps", str(args.max_steps)] if args.max_steps else []),
        ]
        for s in settings
        for t in threads
    ]
    root = args.keep or Path(tempfile.mkdtemp(prefix="train-budget-"))
    print(f"{os.cpu_count()} CPUs; data {args.data}", flush=True)
    for i, extra in enumerate(runs):
        row = run_once(args.data, root / f"run-{i}", extra)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
