"""``PrepareOptions``: every option of ``friendbot prepare``, declared once.

Each field is the option's single declaration: ``friendbot prepare --FIELD-NAME`` and its help
come from it (training/config_cli.py), ``RETRAIN_PREPARE_OPTIONS`` uses the field names, and
``stats.json`` records the values. Imports nothing heavy: ``friendbot --help`` builds from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from training.config_cli import option
from training.errors import InputError

if TYPE_CHECKING:
    from training.data.normalize import Rules


class OptionsError(InputError, ValueError):
    """An impossible option value (a ValueError too, for callers that build options)."""


@dataclass
class PrepareOptions:
    """The options of ``friendbot prepare`` (field names match the CLI flags)."""

    chat: tuple[str, ...] = option(
        (), help="Chat to read, by name or id (repeatable; needed for a full export)."
    )
    exclude: tuple[str, ...] = option(
        (), help="Member (name or id) whose messages are dropped entirely (opt-out)."
    )
    bot: tuple[str, ...] = option((), help="Member (name or id) that is a bot: skip its messages.")
    speakers: tuple[str, ...] = option(
        (), help="Only these members' messages become responses (repeatable or a,b)."
    )
    scrub: bool = option(False, help="Replace phone numbers, e-mails and URLs.")
    session_gap: float = option(120.0, help="Minutes of silence that start a new session.")
    merge_bursts: float = option(
        0.0, help="Join one sender's consecutive messages this many seconds apart (0: off)."
    )
    context: int = option(10, help="Previous turns of the session per pair.")
    min_context: int = option(1, help="Skip pairs with fewer context turns (session openers).")
    sticker_emoji: bool = option(True, help="A sticker without text counts as its emoji.")
    split: tuple[float, float, float] = option(
        (0.8, 0.1, 0.1),
        help="Train/validation/test shares of sessions, e.g. 80/10/10.",
        cli_type=str,
        cli_default="80/10/10",
    )
    seed: int = option(0, help="Seed of the session split.")
    workers: int = option(
        0, help="Processes decoding a large export; 0: one per idle core (max 4)."
    )
    memory: bool = option(
        False,
        help="Give each pair the few older messages most relevant to it and a few of its "
        "speaker's own (memory: / voice: lines), from earlier training sessions only.",
    )
    progress: bool = option(False, help="Draw a progress bar for large inputs.", cli=False)
    allow_single_speaker: bool = option(
        False,
        help="Prepare a chat with fewer than two people to imitate (a channel, saved messages, "
        "a bot chat) instead of refusing it.",
    )

    def __post_init__(self) -> None:
        for name in ("chat", "exclude", "bot", "speakers"):
            setattr(self, name, _names(getattr(self, name)))
        if isinstance(self.split, str):
            self.split = parse_split(self.split)
        self.split = tuple(float(x) for x in self.split)  # type: ignore[assignment]
        if self.context < 1:
            raise OptionsError(f"--context {self.context}: must be at least 1")
        if not 0 <= self.min_context <= self.context:
            raise OptionsError(f"--min-context {self.min_context}: must be between 0 and --context")
        if self.session_gap <= 0:
            raise OptionsError(f"--session-gap {self.session_gap}: must be positive (minutes)")
        if self.workers < 0:
            raise OptionsError(f"--workers {self.workers}: must not be negative (0: automatic)")
        if self.merge_bursts < 0:
            raise OptionsError(f"--merge-bursts {self.merge_bursts}: must not be negative")
        if (
            len(self.split) != 3
            or min(self.split) < 0
            or self.split[0] <= 0
            or abs(sum(self.split) - 1.0) > 1e-6
        ):
            raise OptionsError(
                f"--split {self.split}: three shares (train, validation, test) summing to 1"
            )

    def rules(self) -> Rules:
        from training.data.normalize import Rules, member_keys

        return Rules(
            sticker_emoji=self.sticker_emoji,
            scrub=self.scrub,
            exclude=member_keys(self.exclude),
            bots=member_keys(self.bot),
        )


def parse_split(text: str) -> tuple[float, float, float]:
    """``80/10/10`` or ``0.8/0.1/0.1`` as three shares summing to 1."""
    try:
        parts = [float(p) for p in text.replace(",", "/").split("/")]
    except ValueError:
        parts = []
    if len(parts) != 3 or sum(parts) <= 0:
        raise OptionsError(f"--split {text}: expected three numbers like 80/10/10")
    total = sum(parts)
    return (parts[0] / total, parts[1] / total, parts[2] / total)


def _names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Repeatable options accept one value, several, or comma-separated values."""
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(part.strip() for v in values for part in str(v).split(",") if part.strip())
