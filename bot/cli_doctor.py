"""``friendbot doctor``: the setup checks of bot/doctor.py as a table, and an exit status.

Separate from the checks so they stay free of the CLI and of the application (the bot's
``/doctor`` runs the same checks; bot/app.py wires it).
"""

from __future__ import annotations

import typer

from bot.doctor import Check, Status, blocking, diagnose, summary
from training.errors import InputError


def doctor_command() -> None:
    """Check the setup: token, privacy mode, chats, admins, model, database, exports, schedule,
    disk. Reads the settings as `friendbot run` does (environment, then .env); run it in the
    bot's working directory as the bot's user. Exit status 1 when something stops the bot from
    running, 0 when it runs (warnings included)."""
    from bot.app import protect_token_in_logs
    from bot.settings import load_settings

    try:
        settings = load_settings()
    except InputError:
        settings = None  # diagnose() reports it as the failed "settings" check
    if settings is not None and settings.token:
        protect_token_in_logs(settings.token)
    checks = diagnose(settings)
    print_table(checks)
    if blocking(checks):
        raise typer.Exit(1)


def print_table(checks: list[Check]) -> None:
    """One row per check; what to do next to every warning and failure."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    styles = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}
    table = Table(show_header=True, header_style="bold")
    for column in ("", "check", "found", "what to do"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(
            Text(c.status.value.upper(), style=styles[c.status]),
            Text(c.name),
            Text(c.detail),
            Text(c.fix),
        )
    console = Console()
    console.print(table)
    console.print(summary(checks), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Attach ``doctor`` to the friendbot CLI."""
    app.command("doctor")(doctor_command)
