"""The ``friendbot`` command: one Typer app, one subcommand per job.

Each area registers its own subcommands (``register(app)``) from a module next to the code it
runs, so a reader finds the code behind ``friendbot prepare`` in ``training/cli_data.py`` and
what it calls. Heavy imports (torch, transformers) happen inside the commands, so ``--help``
stays instant.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from training.errors import InputError

app = typer.Typer(
    name="friendbot",
    help="Learn how a Telegram group talks, then join it as a bot that replies in its voices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_err = Console(stderr=True)


def _register_all() -> None:
    """Attach every area's subcommands to ``app`` (one line per area)."""
    from bot import cli_bot, cli_demo, cli_engine
    from training import cli_data, cli_model, cli_retrain

    # in the order a newcomer meets them: the demo, then export -> dataset -> model -> bot
    cli_demo.register(app)
    cli_data.register(app)
    cli_model.register(app)
    cli_engine.register(app)
    cli_bot.register(app)
    cli_retrain.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; a user-fixable error becomes one line on stderr and exit status 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema upgrades: quiet when fine
    _register_all()
    try:
        status = app(args=argv, standalone_mode=False)
    except InputError as exc:
        _err.print(f"friendbot: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        _err.print("Aborted.")
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


if __name__ == "__main__":
    main()
