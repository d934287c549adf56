"""Run ``friendbot`` in the test process and capture what a user would see."""

from __future__ import annotations

import contextlib
import io

from training.cli import main


def friendbot(*args: str) -> tuple[int, str]:
    """Run ``friendbot ARGS`` (training's commands) in this process; (exit status, output)."""
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()
