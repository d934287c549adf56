"""Stop a training child's whole process group once the retrain process that started it dies.

Run as ``python -m training.retrain.child_guard PARENT_PID GROUP`` by
``training.retrain.children.run_child`` next to each child it starts. A retrain killed with
SIGKILL (the out-of-memory killer, ``kill -9``, a power-cycled container) cannot stop its
child; the child runs in its own session, so nothing else would either, and it would train on
for hours with nobody to read its output. On Linux the child itself gets ``PR_SET_PDEATHSIG``;
this guard covers the rest: other systems, and the child's own children (``torchrun`` or
``accelerate`` workers), which share its process group.

The guard is the retrain's child too, so the retrain's death shows as a new parent pid
(``os.getppid()``), with no pid-reuse guesswork. It imports nothing heavy and polls twice a
second; it exits as soon as the group is empty.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL_S = 0.5
GRACE_S = 5.0  # between SIGTERM and SIGKILL: time for a launcher to stop its workers


def guard(parent: int, group: int) -> None:
    """Wait until ``group`` is gone; stop it if ``parent`` dies first."""
    while _alive(group):
        if os.getppid() != parent:
            stop(group)
            return
        time.sleep(POLL_S)


def stop(group: int) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(group, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _alive(group):
                return
            time.sleep(0.1)


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(a.isdigit() for a in argv):
        print("usage: python -m training.retrain.child_guard PARENT_PID GROUP", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the retrain to handle
    guard(int(argv[0]), int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
