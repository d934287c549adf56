"""``friendbot run``, ``chat``, ``history`` and ``judge-report``: the bot from the command line.

Settings come from the environment and ``.env`` (bot/settings.py; docs/bot.md lists them).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def run_command() -> None:
    """Run the Telegram bot (long polling, or a webhook when WEBHOOK_URL is set) until Ctrl-C."""
    from bot.app import run_bot
    from bot.settings import load_settings

    run_bot(load_settings())


def chat_command(
    name: Annotated[str, typer.Option("--name", help="Your name in the chat.")] = "You",
    chat_id: Annotated[
        int,
        typer.Option(
            "--chat-id",
            help="Chat whose stored history gives the context (default: the local test chat).",
        ),
    ] = -1,
) -> None:
    """Chat with the bot in this terminal: same models and storage, no Telegram needed.

    Type as yourself, or `Name: text` to speak as a friend; commands such as /joke work too.
    """
    from bot.local_chat import run_local_chat
    from bot.settings import load_settings

    run_local_chat(load_settings(), you=name, chat_id=chat_id)


def history_command(
    chat_id: Annotated[int, typer.Argument(help="Bot API chat id, e.g. -1001234567890.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Newest messages shown.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """Print what the bot stored for CHAT_ID: the newest messages, oldest first."""
    from bot.settings import load_settings

    settings = load_settings()
    stats, rows = read_history(settings.database_url, chat_id, limit)
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    _print_history(stats, rows)


def read_history(
    database_url: str, chat_id: int, limit: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chat's stats and its newest ``limit`` messages as plain dicts (oldest first).

    Reads only: a missing, empty, damaged or other-version database is one StorageError line,
    and nothing is created or migrated (storage.db.open_existing).
    """
    from storage.db import open_existing, reading
    from storage.history import chat_stats, recent_messages

    engine = open_existing(database_url)
    try:
        with reading(engine) as session:
            stats = dict(chat_stats(session, chat_id))
            rows = [
                {
                    "message_id": m.message_id,
                    "date": m.date.isoformat(),
                    "sender_id": m.sender_id,
                    "sender_name": m.sender_name,
                    "text": m.text,
                    "reply_to_message_id": m.reply_to_message_id,
                    "from_bot": m.from_bot,
                }
                for m in recent_messages(session, chat_id, limit)
            ]
    finally:
        engine.dispose()
    return stats, rows


def _print_history(stats: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    console = Console()
    title = stats.get("title") or stats["chat_id"]
    console.print(
        f"[bold]{escape(str(title))}[/bold]: {stats['messages']} messages "
        f"({stats['bot_messages']} by the bot), {stats['members']} members, "
        f"{stats['first_date'] or '-'} .. {stats['last_date'] or '-'}",
        highlight=False,
    )
    if not rows:
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("date", "sender", "text"):
        table.add_column(column, overflow="fold")
    for row in rows:
        sender = row["sender_name"] + (" (bot)" if row["from_bot"] else "")
        table.add_row(row["date"][:19].replace("T", " "), Text(sender), Text(row["text"]))
    console.print(table)


def judge_report_command(
    chat_id: Annotated[
        int | None, typer.Option("--chat", help="Only this chat's rounds (Bot API id).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")] = False,
) -> None:
    """How often the friends took the bot's lines for real (/guess): the fool rate per model
    and per friend, with 95% intervals, beside the rate at which real lines are voted real."""
    from bot.guess import report_text
    from bot.settings import load_settings
    from storage.db import open_existing, reading
    from storage.judge import judgements

    settings = load_settings()
    engine = open_existing(settings.database_url)  # reads only: creates and migrates nothing
    try:
        with reading(engine) as session:
            by_model = judgements(session, "model", chat_id=chat_id)
            by_friend = judgements(session, "friend", chat_id=chat_id)
    finally:
        engine.dispose()
    if as_json:
        report = {
            "chat_id": chat_id,
            "by_model": [j.to_dict() for j in by_model],
            "by_friend": [j.to_dict() for j in by_friend],
        }
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    where = f"in chat {chat_id}" if chat_id is not None else "in all chats"
    typer.echo(report_text(by_model, by_friend, where))


def register(app: typer.Typer) -> None:
    """Attach ``run``, ``chat``, ``history`` and ``judge-report`` to the friendbot CLI."""
    app.command("run")(run_command)
    app.command("chat")(chat_command)
    # negative chat ids (-100...) must not be taken for options
    app.command("history", context_settings={"ignore_unknown_options": True})(history_command)
    app.command("judge-report")(judge_report_command)
