"""Run ``friendbot`` in the test process and capture what a user would see."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable


def friendbot(*args: str) -> tuple[int, str]:
    """Run ``friendbot ARGS`` (training's commands) in this process; (exit status, output)."""
    from training.cli import main

    return _run(main, args)


def friendbot_with_bot(*args: str) -> tuple[int, str]:
    """As :func:`friendbot`, through the whole CLI (the bot's commands too, e.g. judge-report)."""
    from bot.cli import main

    return _run(main, args)


def _run(main: Callable[[list[str]], object], args: tuple[str, ...]) -> tuple[int, str]:
    out = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()
