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
import sys

import typer
from rich.console import Console

from storage.errors import StorageError
from training.errors import InputError

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


def run(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run ``app``; a user-fixable error becomes one line on stderr and exit status 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema upgrades: quiet when fine
    err = Console(stderr=True)
    try:
        status = app(args=argv, standalone_mode=False)
    except (InputError, StorageError) as exc:
        err.print(f"friendbot: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("Aborted.")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click's own usage errors carry an exit code and show()
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(status, int) and status:  # typer.Exit(n) is returned, not raised, here
        sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    """``python -m training.cli``: the training commands alone."""
    app = new_app()
    register(app)
    run(app, argv)


if __name__ == "__main__":
    main()
