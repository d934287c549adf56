"""A stand-in for ``friendbot train`` in retraining tests (run as a script, never imported).

Retraining trains in a child process, so tests cannot patch the trainer; they point
RETRAIN_TRAIN_COMMAND at this script instead. It takes the same ``--data/--base-model/--out``
options and, by mode:

- ``copy SRC``: writes a copy of model directory SRC to --out (as training would, atomically);
- ``crash``: prints a traceback-like line and exits with status 3;
- ``kill``: dies by SIGKILL (as the out-of-memory killer would do);
- ``inspect REPORT SRC``: writes to REPORT (JSON) the targets training would learn from and
  validate on (``training.model.tasks.load_chat``, what ``friendbot train`` reads) and the
  test split's responses, then copies SRC as ``copy`` does;
- ``slow LOG SECONDS``: appends "pid PID" and "start"/"end" times to LOG around a sleep, then
  exits 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from training.output_dirs import MODEL_KIND, stamp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode")
    parser.add_argument("extra", nargs="*")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--base-model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args, _ = parser.parse_known_args()
    if not (args.data / "train.parquet").is_file():
        sys.exit(f"fake_train: {args.data} is not a prepared dataset")
    if args.mode == "inspect":
        import json

        import pandas as pd

        from training.model.tasks import load_chat

        task = load_chat(args.data)
        report = {
            "train": [e.target for e in task.train],
            "validation": [e.target for e in task.validation],
            "test": pd.read_parquet(args.data / "test.parquet")["response"].tolist(),
            "files": sorted(p.name for p in args.data.iterdir()),
        }
        Path(args.extra[0]).write_text(json.dumps(report, ensure_ascii=False), encoding="utf-8")
        args.mode, args.extra = "copy", args.extra[1:]
    if args.mode == "copy":
        tmp = args.out.with_name(args.out.name + ".tmp")
        shutil.copytree(args.extra[0], tmp)
        stamp(tmp, MODEL_KIND)  # training marks what it writes, so retraining may prune it
        os.replace(tmp, args.out)
        print(f"fake_train: copied {args.extra[0]} -> {args.out}")
    elif args.mode == "crash":
        print("RuntimeError: CUDA out of memory (fake)", flush=True)
        sys.exit(3)
    elif args.mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif args.mode == "slow":
        log, seconds = Path(args.extra[0]), float(args.extra[1])
        with open(log, "a") as f:
            f.write(f"pid {os.getpid()}\nstart {time.time()}\n")
        time.sleep(seconds)
        with open(log, "a") as f:
            f.write(f"end {time.time()}\n")
        sys.exit(1)
    else:
        sys.exit(f"fake_train: unknown mode {args.mode}")


if __name__ == "__main__":
    main()
