"""From stored history to prompts, and from generated text to a message posted as a friend.

Pure functions only (no Telegram, no model), so the rules are unit-tested directly:

- Context is the chat's recent messages rendered with ``training.formatting`` exactly as the
  training pairs were, so the model sees at serving time what it saw in training.
- The chat model answers ``Sender: text``: it picks who speaks. The bot accepts that choice only
  for a friend it knows who has not opted out, and prefers not to answer the person who asked
  in their own voice; otherwise it asks again with a persona line (``reply as NAME:``).
  A placeholder (a deleted account, a chat posting as itself) is never a friend:
  ``training.formatting.is_placeholder_sender``, the test training applies to responses.
- Posts read ``<b>Hugo</b>: text`` (HTML parse mode; everything from users or the model is
  escaped).
- /paraphrase and /joke send a task model (a trained task model, or the base FLAN-T5) the very
  prompts it was trained on (``training.model.tasks``), and chat-shaped prompts when they fall back
  to the chat model.
"""

from __future__ import annotations

import html
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from training.formatting import (
    build_prompt,
    clean_text,
    format_turn,
    is_placeholder_sender,
    parse_turn,
)
from training.model import tasks

TELEGRAM_MAX_CHARS = 4096
MAX_PARAPHRASES = 3
SHRUG = "…"  # what a friend "says" when asked directly and the model produced no text


class UsageError(Exception):
    """A command used wrongly; the message is the answer the user gets (plain text)."""


class StoredTurn(Protocol):
    """The fields of a stored message that the prompt needs (storage.models.Message has them)."""

    sender_name: str
    text: str


@dataclass(frozen=True, slots=True)
class ReplyOrigin:
    """What an in-character reply answered, so the group's reactions to it can become a
    training example (storage.feedback): the newest stored message of the context and how
    many stored messages were read, the kind of reply, and the model that wrote it."""

    kind: str  # "chat" (joined the conversation) or "as" (/as NAME)
    context_until: int | None
    context_size: int
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A message the bot posts in a friend's voice (``origin``: what it answered, if known)."""

    speaker: str
    text: str
    origin: ReplyOrigin | None = field(default=None, compare=False)  # bookkeeping, not content

    def html(self) -> str:
        """``<b>Speaker</b>: text``, escaped, within Telegram's length limit."""
        return format_reply_html(self.speaker, self.text)


def format_reply_html(speaker: str, text: str) -> str:
    """Bold name, colon, text; user and model text is escaped so it can never inject markup."""
    name = html.escape(clean_text(speaker)[:64])
    raw = text.strip()
    body = html.escape(raw)
    room = TELEGRAM_MAX_CHARS - len(name) - len("<b></b>: ")
    while len(body) > room:  # cut the raw text, never an escape sequence in half
        raw = raw[: len(raw) - max(1, len(body) - room + 1)]
        body = html.escape(raw) + "…"
    return f"<b>{name}</b>: {body}"


def context_lines(messages: Iterable[StoredTurn]) -> list[str]:
    """The chat's recent messages (oldest first) as the ``Sender: text`` lines of training."""
    return [format_turn(m.sender_name, m.text) for m in messages if clean_text(m.text)]


def same_name(a: str, b: str) -> bool:
    """Names compare without case or extra spaces (the model writes 'hugo' for 'Hugo')."""
    return clean_text(a).casefold() == clean_text(b).casefold()


@dataclass(frozen=True)
class Friends:
    """Who the bot may speak as: known names minus those who opted out and placeholders."""

    known: tuple[str, ...]
    blocked: frozenset[str]  # casefolded names (display names and usernames) of opted-out members

    @classmethod
    def build(cls, names: Iterable[str], blocked_names: Iterable[str]) -> Friends:
        """Known names in first-seen order, de-duplicated; opted-out names removed.

        "Deleted Account" and the like are dropped too: a model trained before training
        left them out lists them among its speakers (``friendbot.json``), and a reply signed
        by one is the first thing a chat notices.
        """
        blocked = frozenset(clean_text(n).casefold() for n in blocked_names if clean_text(n))
        seen: dict[str, str] = {}
        for name in names:
            name = clean_text(name)
            key = name.casefold()
            if is_placeholder_sender(name) or key in blocked or key in seen:
                continue
            seen[key] = name
        return cls(tuple(seen.values()), blocked)

    def is_blocked(self, name: str) -> bool:
        """True for a member who opted out (by display name or @username)."""
        key = clean_text(name).casefold()
        return key in self.blocked or key.lstrip("@") in self.blocked

    def find(self, name: str) -> str | None:
        """The known spelling of ``name``, or None if it is not a friend the bot can imitate."""
        if self.is_blocked(name):
            return None
        return next((k for k in self.known if same_name(k, name)), None)

    def pick(self, rng: random.Random, avoid: Iterable[str] = ()) -> str | None:
        """A random friend to speak as, preferring someone other than ``avoid``."""
        avoid_keys = {clean_text(a).casefold() for a in avoid}
        others = [k for k in self.known if k.casefold() not in avoid_keys]
        pool = others or list(self.known)
        return rng.choice(pool) if pool else None


def choose_reply(
    candidates: Sequence[str], friends: Friends, avoid: Iterable[str] = ()
) -> Reply | None:
    """The first generated ``Sender: text`` spoken by a known friend, not one to avoid.

    None means the model named nobody usable (an opted-out member, a stranger, the asker,
    or no name at all); the caller then asks again with a persona line.
    """
    avoid_keys = {clean_text(a).casefold() for a in avoid}
    for candidate in candidates:
        sender, text = parse_turn(candidate)
        if sender is None or not text:
            continue
        name = friends.find(sender)
        if name is not None and name.casefold() not in avoid_keys:
            return Reply(name, text)
    return None


def persona_reply(candidates: Sequence[str], persona: str) -> Reply | None:
    """The first non-empty candidate, posted as ``persona`` whatever name the model wrote."""
    for candidate in candidates:
        sender, text = parse_turn(candidate)
        text = text if sender is not None else clean_text(candidate)
        if text:
            return Reply(persona, text)
    return None


def limit_input(text: str, max_chars: int, usage: str) -> str:
    """The command's argument, one line; empty gets the usage line, too long says so."""
    text = clean_text(text)
    if not text:
        raise UsageError(usage)
    if len(text) > max_chars:
        raise UsageError(f"That is too long ({len(text)} characters; at most {max_chars}).")
    return text


def split_as_args(args: Sequence[str], friends: Friends) -> tuple[str, str]:
    """``/as Hugo Boss what's up`` -> (name, text), matching the longest known name first.

    Names may contain spaces, so the longest run of leading words that names a known friend
    wins; failing that, the first word is the name. A trailing colon (``Hugo:``) is allowed.
    """
    words = [w for w in args if w]
    if not words:
        raise UsageError("Usage: /as NAME [text]")
    for n in range(len(words), 0, -1):
        name = " ".join(words[:n]).rstrip(":")
        if friends.find(name) is not None:
            return friends.find(name) or name, " ".join(words[n:])
    return words[0].rstrip(":"), " ".join(words[1:])


# --- task prompts ----------------------------------------------------------------------------


def paraphrase_prompt(text: str, instruct: bool, asker: str) -> str:
    """The task model's instruction, or (chat model fallback) the text as a chat turn."""
    if instruct:
        return tasks.paraphrase_prompt(text)
    return build_prompt([format_turn(asker, text)])


def clean_paraphrases(outputs: Iterable[str], original: str, instruct: bool) -> list[str]:
    """At most three distinct outputs that differ from the original, names stripped."""
    seen = {clean_text(original).casefold()}
    kept: list[str] = []
    for out in outputs:
        if not instruct:
            sender, text = parse_turn(out)
            out = text if sender is not None else out
        out = clean_text(out)
        if out and out.casefold() not in seen:
            seen.add(out.casefold())
            kept.append(out)
        if len(kept) == MAX_PARAPHRASES:
            break
    return kept


def joke_prompt(
    topic: str | None, instruct: bool, context: Sequence[str], asker: str, teller: str
) -> str:
    """A joke request: an instruction to FLAN-T5, or a chat turn answered as ``teller``."""
    if instruct:
        return tasks.joke_prompt(topic)
    request = f"a joke about {topic}" if topic else "a joke"
    return build_prompt([*context, format_turn(asker, f"tell us {request}")], persona=teller)


def as_prompt(
    context: Sequence[str],
    persona: str,
    asker: str,
    text: str,
    *,
    memory: Sequence[str] = (),
    voice: Sequence[str] = (),
) -> str:
    """The chat so far (plus the asker's text, if any), answered as ``persona``; with the
    memory and voice lines of a model trained with long memory (bot.memory)."""
    lines = list(context)
    if text:
        lines.append(format_turn(asker, text))
    return build_prompt(lines, persona=persona, memory=memory, voice=voice)
