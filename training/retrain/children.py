"""Retraining's child processes: run one, stream its output, and never let it outlive us.

Training runs in a child process so that a crash there (out of memory, a CUDA error) cannot
take the retraining run down with it. The price is a process that must die with its parent:
``PR_SET_PDEATHSIG`` on Linux and a small guard process (``child_guard.py``) elsewhere stop
the child's whole process group when ``friendbot retrain`` is killed.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """A step of the run failed for a reason worth recording as is (no traceback needed)."""


_TAIL_CHARS = 2000
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_child(
    argv: list[str], log_path: Path, timeout_s: float | None, echo: bool
) -> tuple[int, str]:
    """Run ``argv`` in its own process group; append its output to ``log_path``.

    Returns (exit status, the output's last characters). The child gets its own session so
    that on a timeout or an interrupt the whole group (launchers like torchrun included) is
    stopped, and so a Ctrl-C meant for us reaches it only through us. Being in its own
    session, it would outlive a SIGKILL of this process; so it dies with us: on Linux by
    ``PR_SET_PDEATHSIG``, and everywhere by ``training.retrain.child_guard``, which stops the
    whole group (its own children too) within a second of our death.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=64)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log_file:
        log_file.write(f"$ {' '.join(argv)}\n".encode())
        log_file.flush()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        guard = _start_guard(proc.pid, log_file)
        pump = threading.Thread(
            target=_pump, args=(proc, log_file, tail, echo), name="retrain-log", daemon=True
        )
        pump.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            pump.join(timeout=5)
            raise RunFailed(
                f"training timed out after {timeout_s} s (RETRAIN_TRAIN_TIMEOUT_S); log {log_path}"
            ) from None
        except BaseException:
            _stop_group(proc)
            raise
        finally:
            _end_guard(guard)
        pump.join(timeout=5)
    return rc, "".join(tail)[-_TAIL_CHARS:]


@functools.cache
def _prctl() -> Any:
    """libc's ``prctl`` (Linux), looked up once, before any fork; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when ``parent`` dies (Linux).

    It runs in the forked child before ``exec``, so it does as little as possible: one
    system call through a function looked up beforehand, and a check that the parent did
    not die before it (then nobody would send the signal). The signal survives ``exec``.
    """
    prctl = _prctl()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _start_guard(group: int, log_file: BinaryIO) -> subprocess.Popen[bytes] | None:
    """Start ``child_guard`` for the child's group (see run_child); None if it cannot start."""
    argv = [sys.executable, "-m", "training.retrain.child_guard", str(os.getpid()), str(group)]
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,  # a Ctrl-C or a signal to our group is not for it
        )
    except OSError as exc:  # the child still dies with us on Linux; say so and go on
        log.warning("could not start the training child's guard: %s", exc)
        return None


def _end_guard(guard: subprocess.Popen[bytes] | None) -> None:
    """The child is done: its guard is not needed any more."""
    if guard is None:
        return
    if guard.poll() is None:
        guard.kill()
    guard.wait()


def _pump(proc: subprocess.Popen[bytes], log_file: Any, tail: deque[str], echo: bool) -> None:
    """Copy the child's output to the log (and our stderr), keeping the last chunks."""
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(65536):
        log_file.write(chunk)
        log_file.flush()
        tail.append(chunk.decode("utf-8", "replace"))
        if echo:
            sys.stderr.write(chunk.decode("utf-8", "replace"))
            sys.stderr.flush()


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after 10 s."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def last_lines(text: str, n: int = 3) -> str:
    """The last non-empty lines of a child's output (progress-bar carriage returns removed)."""
    lines = [ln.rsplit("\r", 1)[-1].strip() for ln in text.splitlines()]
    return " | ".join([ln for ln in lines if ln][-n:]) or "(no output)"
