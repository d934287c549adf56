"""``friendbot chats`` and ``friendbot prepare``: the data commands.

``chats`` lists what an export holds (``training.data.export.list_chats``); ``prepare`` maps its
options one to one onto ``training.data.prepare.PrepareOptions`` and runs
``training.data.prepare.prepare``. Heavy imports (pyarrow, numpy) happen inside the commands so
``friendbot --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from training.errors import InputError

if TYPE_CHECKING:
    from training.data.prepare import PrepareStats

_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Attach ``chats`` and ``prepare`` to the ``friendbot`` app."""
    app.command("chats")(chats)
    app.command("prepare")(prepare)


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
    chat: Annotated[
        list[str] | None,
        typer.Option(help="Chat to read, by name or id (repeatable; needed for a full export)."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(help="Member (name or id) whose messages are dropped entirely (opt-out)."),
    ] = None,
    bot: Annotated[
        list[str] | None, typer.Option(help="Member (name or id) that is a bot: skip its messages.")
    ] = None,
    speakers: Annotated[
        list[str] | None,
        typer.Option(help="Only these members' messages become responses (repeatable or a,b)."),
    ] = None,
    scrub: Annotated[
        bool, typer.Option("--scrub", help="Replace phone numbers, e-mails and URLs.")
    ] = False,
    session_gap: Annotated[
        float, typer.Option(help="Minutes of silence that start a new session.")
    ] = 120.0,
    merge_bursts: Annotated[
        float,
        typer.Option(help="Join one sender's consecutive messages this many seconds apart."),
    ] = 0.0,
    context: Annotated[int, typer.Option(help="Previous turns of the session per pair.")] = 10,
    min_context: Annotated[
        int, typer.Option(help="Skip pairs with fewer context turns (session openers).")
    ] = 1,
    sticker_emoji: Annotated[
        bool, typer.Option(help="A sticker without text counts as its emoji.")
    ] = True,
    split: Annotated[
        str, typer.Option(help="Train/validation/test shares of sessions, e.g. 80/10/10.")
    ] = "80/10/10",
    seed: Annotated[int, typer.Option(help="Seed of the session split.")] = 0,
    workers: Annotated[
        int, typer.Option(help="Processes decoding a large export; 0: one per idle core (max 4).")
    ] = 0,
    allow_single_speaker: Annotated[
        bool,
        typer.Option(
            "--allow-single-speaker",
            help="Prepare a chat with fewer than two people to imitate (a channel, saved "
            "messages, a bot chat) instead of refusing it.",
        ),
    ] = False,
) -> None:
    """Turn Telegram exports into conversation -> response pairs (train/validation/test)."""
    from training.data.prepare import PrepareOptions
    from training.data.prepare import prepare as run_prepare

    options = PrepareOptions(
        chat=tuple(chat or ()),
        exclude=tuple(exclude or ()),
        bot=tuple(bot or ()),
        speakers=tuple(speakers or ()),
        scrub=scrub,
        session_gap=session_gap,
        merge_bursts=merge_bursts,
        context=context,
        min_context=min_context,
        sticker_emoji=sticker_emoji,
        split=_parse_split(split),
        seed=seed,
        workers=workers,
        progress=True,
        allow_single_speaker=allow_single_speaker,
    )
    stats = run_prepare(exports, out, options)
    for warning in stats.warnings:
        _warn(warning)
    _print_stats(stats, out)


def _warn(line: str | None) -> None:
    if line:
        _err.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)


def _parse_split(text: str) -> tuple[float, float, float]:
    """``80/10/10`` or ``0.8/0.1/0.1`` as three shares summing to 1."""
    try:
        parts = [float(p) for p in text.replace(",", "/").split("/")]
    except ValueError:
        parts = []
    if len(parts) != 3 or sum(parts) <= 0:
        raise InputError(f"--split {text}: expected three numbers like 80/10/10")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


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
