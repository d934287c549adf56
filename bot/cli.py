"""The ``friendbot`` command: training's subcommands (training/cli.py) plus the bot's.

A reader finds the code behind any subcommand in one hop from the table in
docs/architecture.md: each area registers its commands from a module next to the code they run.
"""

from __future__ import annotations

from training.cli import new_app, run
from training.cli import register as register_training


def main(argv: list[str] | None = None) -> None:
    """Run ``friendbot``; errors are one line and exit status 2 (see training.cli.run)."""
    from bot import cli_bot, cli_demo, cli_doctor

    app = new_app()
    cli_demo.register(app)  # the README's main job first
    register_training(app)
    cli_bot.register(app)
    cli_doctor.register(app)
    run(app, argv)


if __name__ == "__main__":
    main()
