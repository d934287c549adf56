"""Benchmark: `friendbot prepare` against the seed notebook's pandas algorithm, same export.

Generates a synthetic Telegram export (kept outside the repo, reused between runs), then runs
each side in a fresh subprocess so that its peak RSS (``wait4``'s ``ru_maxrss``) is its own:

(a) the seed notebook's algorithm, straightforwardly in pandas: ``json.load``, a DataFrame of
    text/from/date, sort, gap-based session ids, a Python loop over the previous 10 rows per
    message, a random 80/20 row split, parquet;
(b) ``friendbot prepare EXPORT --out DIR`` (the real CLI, start-up included).

    python bench/prepare.py                     # 200,000 messages (quick)
    python bench/prepare.py --full              # 1,000,000 messages (the recorded figures)
    python bench/prepare.py --messages 50000 --workdir /tmp/fb-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_export import write_export  # noqa: E402


def seed_baseline(export: Path, out: Path) -> dict[str, float]:
    """The seed notebook's algorithm, as a notebook would write it with pandas."""
    import pandas as pd

    times: dict[str, float] = {}
    t = time.perf_counter()
    with open(export, encoding="utf-8") as f:
        data = json.load(f)
    times["load"] = time.perf_counter() - t

    t = time.perf_counter()
    df = pd.DataFrame(data["messages"])
    del data
    df = df[df["type"] == "message"][["text", "from", "date"]].copy()
    df["text"] = df["text"].apply(
        lambda x: (
            x if isinstance(x, str) else "".join(p if isinstance(p, str) else p["text"] for p in x)
        )
    )
    df = df[df["text"].str.strip() != ""]
    df["date"] = pd.to_datetime(df["date"])
    df = df.sort_values("date").reset_index(drop=True)
    df["session"] = (df["date"].diff() > pd.Timedelta(minutes=120)).cumsum()
    times["frame"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = []
    history: list[tuple] = []  # the previous 10 rows: (from, text, session)
    for i in range(len(df)):
        row = df.iloc[i]
        context = [f"{who}: {text}" for who, text, session in history if session == row["session"]]
        if context:
            rows.append(
                {"conversation": "\n".join(context), "response": f"{row['from']}: {row['text']}"}
            )
        history = [*history, (row["from"], row["text"], row["session"])][-10:]
    pairs = pd.DataFrame(rows)
    times["loop"] = time.perf_counter() - t

    t = time.perf_counter()
    train = pairs.sample(frac=0.8, random_state=42)
    test = pairs.drop(train.index)
    out.mkdir(parents=True, exist_ok=True)
    train.to_parquet(out / "train.parquet")
    test.to_parquet(out / "test.parquet")
    times["write"] = time.perf_counter() - t
    times["pairs"] = len(pairs)
    return times


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, now (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, StopIteration):
            continue
    return total * 1024


def measure(argv: list[str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (bytes) and stdout of one fresh child process.

    Peak RSS is the larger of the child's own peak (``wait4``'s ``ru_maxrss``) and the
    largest sum over the child and its worker processes seen by sampling every 10 ms, so
    decoding in several processes cannot hide memory.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        peak_tree = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not stop.wait(0.01):
                peak_tree = max(peak_tree, _tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        stop.set()
        sampler.join()
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        out.seek(0)
        err.seek(0)
        if code != 0:
            sys.exit(f"{' '.join(argv[:4])} failed ({code}):\n{err.read()[-3000:].decode()}")
        return wall, max(usage.ru_maxrss * 1024, peak_tree), out.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="messages in the export")
    parser.add_argument("--full", action="store_true", help="1,000,000 messages")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "friendbot-prepare-bench"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="time only ours")
    args = parser.parse_args()
    n = 1_000_000 if args.full else args.messages
    args.workdir.mkdir(parents=True, exist_ok=True)
    export = args.workdir / f"export_{n}.json"
    if not export.exists():
        print(f"generating {export} ...", flush=True)
        write_export(export, n)
    size = export.stat().st_size
    print(f"export: {n:,} messages, {size / 2**20:,.0f} MiB ({export})", flush=True)

    results = []
    if not args.skip_baseline:
        out = args.workdir / "out_baseline"
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, stdout = measure([sys.executable, __file__, "--baseline", str(export), str(out)])
        phases = json.loads(stdout.strip().splitlines()[-1])
        results.append(("seed algorithm (pandas)", wall, rss, phases))
    out = args.workdir / "out_friendbot"
    shutil.rmtree(out, ignore_errors=True)
    wall, rss, _ = measure(
        [sys.executable, "-m", "training.cli", "prepare", str(export), "--out", str(out)]
    )
    stats = json.loads((out / "stats.json").read_text())
    results.append(("friendbot prepare", wall, rss, {"pairs": sum(stats["pairs"].values())}))

    print()
    print(
        f"{'':26} {'seconds':>8} {'messages/s':>11} {'peak RSS':>10} {'RSS/file':>9} {'pairs':>9}"
    )
    for name, wall, rss, extra in results:
        print(
            f"{name:26} {wall:8.1f} {n / wall:11,.0f} {rss / 2**20:7,.0f} MiB "
            f"{rss / size:8.2f}x {int(extra['pairs']):9,}"
        )
    if len(results) == 2:
        (_, wall_a, rss_a, phases), (_, wall_b, rss_b, _) = results
        detail = ", ".join(f"{k} {v:.1f}s" for k, v in phases.items() if k != "pairs")
        print(f"\nseed algorithm phases: {detail}")
        print(f"speed-up: {wall_a / wall_b:.1f}x   peak RSS: {rss_a / rss_b:.1f}x less")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline":
        print(json.dumps(seed_baseline(Path(sys.argv[2]), Path(sys.argv[3]))))
    else:
        main()
