"""A stand-in for ``friendbot train`` in retraining tests (run as a script, never imported).

Retraining trains in a child process, so tests cannot patch the trainer; they point
RETRAIN_TRAIN_COMMAND at this script instead. It takes the same ``--data/--base-model/--out``
options and, by mode:

- ``copy SRC``: writes a copy of model directory SRC to --out (as training would, atomically);
- ``crash``: prints a traceback-like line and exits with status 3;
- ``kill``: dies by SIGKILL (as the out-of-memory killer would do);
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
