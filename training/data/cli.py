"""``friendbot chats`` and ``friendbot prepare``: the data commands.

``chats`` lists what an export holds (``training.data.export.list_chats``); ``prepare``'s options
are the fields of ``training.data.options.PrepareOptions`` (declared there once, help included)
and it runs ``training.data.prepare.prepare``. Heavy imports (pyarrow, numpy) happen inside the
commands so ``friendbot --help`` stays instant.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from training.config_cli import config_command
from training.data.options import PrepareOptions

if TYPE_CHECKING:
    from training.data.prepare import PrepareStats

_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Attach ``chats`` and ``prepare`` to the ``friendbot`` app."""
    app.command("chats")(chats)
    app.command("prepare")(config_command(prepare))


def chats(
    export: Annotated[Path, typer.Argument(help="A Telegram Desktop export (result.json).")],
) -> None:
    """List the chats in an export: id (Bot API form), type, name and message count."""
    from training.data.export import list_chats, utf8_warning
    from training.data.utf8 import InvalidUtf8

    invalid_utf8 = InvalidUtf8()
    found = list_chats(export, invalid_utf8)
    _warn(utf8_warning(export, invalid_utf8))
    table = Table()
    for column in ("id", "type", "name", "messages"):
        table.add_column(column, justify="right" if column in ("id", "messages") else "left")
    for chat in found:
        table.add_row(
            str(chat.chat_id),
            chat.type or "",
            chat.name or "(no name)",
            f"{chat.messages:,}",
            style=None if chat.is_group else "dim",
        )
    _out.print(f"{export}: {len(found)} chat(s)", markup=False, highlight=False)
    _out.print(table)


def prepare(
    exports: Annotated[
        list[Path], typer.Argument(help="Telegram Desktop exports: single-chat or full-account.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dataset directory to write.")],
    options: PrepareOptions,
) -> None:
    """Turn Telegram exports into conversation -> response pairs (train/validation/test)."""
    from training.data.prepare import prepare as run_prepare

    stats = run_prepare(exports, out, replace(options, progress=True))
    for warning in stats.warnings:
        _warn(warning)
    _print_stats(stats, out)


def _warn(line: str | None) -> None:
    if line:
        _err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


def _print_stats(stats: PrepareStats, out: Path) -> None:
    """The numbers of stats.json as one table."""
    table = Table(title=f"prepared {out} in {stats.seconds:.1f}s", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("messages read", f"{stats.messages_read:,}")
    for reason, n in stats.skipped.items():
        table.add_row(f"  skipped: {reason}", f"{n:,}", style="dim")
    table.add_row("messages kept", f"{stats.messages_kept:,}")
    if stats.turns != stats.messages_kept:
        table.add_row("turns (bursts merged)", f"{stats.turns:,}")
    sessions = stats.sessions
    table.add_row(
        "sessions (train/validation/test)",
        f"{sessions['total']:,} ({sessions['train']:,}/{sessions['validation']:,}/"
        f"{sessions['test']:,})",
    )
    for reason, n in stats.pairs_skipped.items():
        if n:
            table.add_row(f"  no pair: {reason}", f"{n:,}", style="dim")
    for split, n in stats.pairs.items():
        table.add_row(f"pairs: {split}", f"{n:,}", style="bold")
    speakers = list(stats.pairs_per_speaker.items())
    for name, n in speakers[:12]:
        table.add_row(f"  responses by {name}", f"{n:,}")
    if len(speakers) > 12:
        rest = sum(n for _, n in speakers[12:])
        table.add_row(f"  responses by {len(speakers) - 12} others", f"{rest:,}")
    _out.print(table)
