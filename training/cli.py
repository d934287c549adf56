"""The training half of the ``friendbot`` command, runnable without the bot installed.

``friendbot`` (bot/cli.py) is this app plus the bot's commands. Retraining launches its child
processes as ``python -m training.cli train|export-ct2|retrain``, so a training machine needs
no Telegram code, and both entry points print errors and exit alike (``run``).

Each area registers its own subcommands from a module next to the code it runs
(``training/data/cli.py``, ``training/model/cli.py``, ``training/retrain/cli.py``); heavy
imports (torch, transformers, pandas) happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import typer
from rich.console import Console

from storage.errors import StorageError
from training.errors import InputError, first_line

HELP = "Learn how a Telegram group talks, then join it as a bot that replies in its voices."


def new_app() -> typer.Typer:
    """An empty ``friendbot`` app; areas attach their subcommands with ``register(app)``."""
    return typer.Typer(
        name="friendbot",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )


def register(app: typer.Typer) -> None:
    """Attach training's subcommands, in the order a newcomer meets them."""
    from training.data import cli as data_cli
    from training.model import cli as model_cli
    from training.retrain import cli as retrain_cli

    data_cli.register(app)
    model_cli.register(app)
    retrain_cli.register(app)


# Click's exception base, whichever click typer uses: typer >= 0.29 bundles its own
# (``typer._click``), older typer uses the ``click`` package. Usage errors derive from it.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
DEBUG_VARIABLE = "FRIENDBOT_DEBUG"


def run(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run ``app`` the way a user's shell should see it: never a traceback by default.

    - a usage mistake (missing/unknown argument or option, a bad value, an unknown command):
      click's usage message, exit status 2;
    - a user-fixable error (``InputError``, or a file the system refuses): one line, status 2;
    - anything else is a bug: one line saying so, status 1, and ``FRIENDBOT_DEBUG=1`` shows
      the traceback (the exception is re-raised).
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema upgrades: quiet when fine
    try:
        status = app(args=argv, standalone_mode=False)
    except SystemExit:
        raise
    except (InputError, StorageError) as exc:
        _fail(f"friendbot: error: {exc}", exc.exit_code)
    except typer.Abort:
        _fail("Aborted.", 130)
    except _CLICK_ERROR as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _debug():
            raise
        _fail(*_describe(exc))
    if isinstance(status, int) and status:  # typer.Exit(n) is returned, not raised, here
        sys.exit(status)


def _describe(exc: Exception) -> tuple[str, int]:
    """A file the system refuses is the user's to fix (2); anything else is our bug (1)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"friendbot: error: {exc.filename}: {exc.strerror or first_line(exc)}", 2
    hint = f"run with {DEBUG_VARIABLE}=1 for the traceback"
    return f"friendbot: internal error: {type(exc).__name__}: {first_line(exc)} ({hint})", 1


def _debug() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


def _fail(line: str, status: int) -> NoReturn:
    Console(stderr=True).print(line, markup=False, highlight=False, soft_wrap=True)
    sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    """``python -m training.cli``: the training commands alone."""
    app = new_app()
    register(app)
    run(app, argv)


if __name__ == "__main__":
    main()
