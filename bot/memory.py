"""Long memory: older messages of the chat, found by full-text search, put into the prompt.

The model sees the last ``HISTORY_SIZE`` messages. A model trained with memory (its
``friendbot.json`` has ``"memory": {"memory_lines": M, "voice_lines": V}``, written by
``friendbot train`` on a dataset prepared with ``--memory``) also reads, before the context:

- up to ``M`` *memory* lines: the messages of this chat most relevant to the context window
  (``storage.search`` over ``training.formatting.memory_terms`` of the window, ranked by
  ``training.memory_search``: the rule ``prepare --memory`` trains with), all strictly
  older than the window: never the window itself, never anything after it;
- up to ``V`` *voice* lines for the persona being played (known once a persona is chosen):
  that friend's own older messages most similar to the context (from the same search),
  padded with their latest older ones, as exemplars of how they talk.

Least relevant first: ``encode_source`` drops a long prompt's first lines first, so when the
source length is short the weakest memory goes before the best. A model trained without
memory gets exactly the prompt it always got. ``LONG_MEMORY=false`` turns it off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bot.replies import Friends, Reply, same_name
from storage.search import FoundMessage, best_of, search_candidates, search_messages
from training.formatting import (
    build_prompt,
    clean_text,
    format_turn,
    memory_line,
    memory_terms,
    voice_line,
)
from training.memory_search import CANDIDATES, TERMS, Doc, scores

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from storage.models import Message

MEMORY_KEY = "memory"
"""friendbot.json's key: how many memory and voice lines the model was trained with."""


@dataclass(frozen=True, slots=True)
class MemorySpec:
    """The memory a model was trained to read (0 lines: none of that kind)."""

    memory_lines: int
    voice_lines: int


def memory_spec(info: Mapping[str, Any]) -> MemorySpec | None:
    """What ``friendbot.json`` says the model was trained with; None: no memory.

    Anything but whole numbers >= 0 counts as no memory (an older or foreign file), so a
    malformed key can never put lines into a prompt the model was not trained on.
    """
    value = info.get(MEMORY_KEY)
    if not isinstance(value, Mapping):
        return None
    counts = [value.get("memory_lines", 0), value.get("voice_lines", 0)]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return None
    spec = MemorySpec(*counts)
    return spec if spec.memory_lines or spec.voice_lines else None


def day(date: datetime) -> str:
    """The day a message was sent (UTC), as memory lines and /recall write it."""
    return date.strftime("%Y-%m-%d")


def found_line(message: FoundMessage) -> str:
    """``2026-10-02 Hugo: text``: one thing ``/recall`` found, for people to read."""
    return f"{day(message.date)} {clean_text(message.sender_name)}: {clean_text(message.text)}"


@dataclass(frozen=True)
class Window:
    """The context window of one prompt: memory must come from strictly before it."""

    chat_id: int
    message_ids: tuple[int, ...]
    start: datetime | None  # the oldest window message's date (None: an empty chat)
    terms: tuple[str, ...]
    sender_ids: Mapping[str, int] = field(default_factory=dict)  # recent names -> their ids

    @classmethod
    def of(cls, chat_id: int, window: Sequence[Message], recent: Sequence[Message]) -> Window:
        """The window (oldest first) and the wider recent history it ends (for names)."""
        ids: dict[str, int] = {}
        for m in recent:  # newest last, so a renamed member's latest name wins
            if m.sender_id is not None and not m.from_bot:
                ids[m.sender_name] = m.sender_id
        return cls(
            chat_id=chat_id,
            message_ids=tuple(m.message_id for m in window),
            start=window[0].date if window else None,
            terms=tuple(memory_terms(" ".join(m.text for m in window), limit=TERMS)),
            sender_ids=ids,
        )

    def sender_id(self, name: str) -> int | None:
        return next((i for n, i in self.sender_ids.items() if same_name(n, name)), None)


def rank(words: Sequence[str], found: Sequence[FoundMessage]) -> list[float]:
    """The shared memory rule's scores (``training.memory_search``, as ``prepare --memory``)."""
    return scores(words, [Doc.of(m.text, m.sender_name) for m in found])


@dataclass(frozen=True)
class Candidates:
    """A window's search result: the chat's newest older matches and their scores. Memory
    and voice lines are both picked from it, so a reply costs one search."""

    found: list[FoundMessage]
    scores: list[float]

    @classmethod
    def search(cls, session: Session, window: Window) -> Candidates:
        if not window.terms or window.start is None:
            return cls([], [])
        found = search_candidates(
            session,
            window.chat_id,
            window.terms,
            before=window.start,
            exclude_message_ids=window.message_ids,
            limit=CANDIDATES,
        )
        return cls(found, rank(window.terms, found))

    def best(self, limit: int, sender_id: int | None = None) -> list[FoundMessage]:
        return best_of(self.found, self.scores, limit, sender_id) if limit > 0 else []


def remembered(candidates: Candidates, limit: int) -> list[str]:
    """Memory lines: the most relevant older messages, least relevant first."""
    found = candidates.best(limit)
    return [memory_line(day(m.date), m.sender_name, m.text) for m in reversed(found)]


def voice_of(
    session: Session, window: Window, candidates: Candidates, sender_id: int, limit: int
) -> list[str]:
    """Voice lines: the friend's older messages most similar to the window, padded with their
    latest older ones when few match; least relevant first."""
    if limit <= 0 or window.start is None:
        return []
    own = [(m.message_id, m.text) for m in candidates.best(limit, sender_id)]
    if len(own) < limit:
        ids = {i for i, _ in own}
        latest = _latest(session, window, sender_id, limit)
        own += [(i, t) for i, t in latest if i not in ids][: limit - len(own)]
    return [voice_line(t) for _, t in reversed(own)]


def _latest(session: Session, window: Window, sender_id: int, limit: int) -> list[tuple[int, str]]:
    """The friend's ``limit`` latest older messages with text, newest first."""
    from storage.models import Message

    assert window.start is not None
    stmt = (
        select(Message.message_id, Message.text)
        .where(
            Message.chat_id == window.chat_id,
            Message.sender_id == sender_id,
            Message.date < window.start,
            ~Message.from_bot,
            Message.text != "",
        )
        .order_by(Message.date.desc(), Message.id.desc())
        .limit(limit)
    )
    return [(i, t) for i, t in session.execute(stmt)]


class Memory:
    """One prompt's memory: read with the context, voice fetched once the persona is known.

    ``Memory.off()`` (a model trained without memory, ``LONG_MEMORY=false``) builds exactly
    the prompts the bot always built.
    """

    def __init__(
        self,
        spec: MemorySpec | None = None,
        window: Window | None = None,
        lines: Sequence[str] = (),
        sessions: sessionmaker[Session] | None = None,
        candidates: Candidates | None = None,
    ) -> None:
        self.spec = spec
        self.window = window
        self.lines = list(lines)
        self._sessions = sessions
        self._candidates = candidates or Candidates([], [])

    @classmethod
    def off(cls) -> Memory:
        return cls()

    @classmethod
    def read(
        cls, sessions: sessionmaker[Session], spec: MemorySpec | None, window: Window
    ) -> Memory:
        """Search for ``window`` now (blocking: call it off the event loop): the memory lines,
        and the candidates the voice lines are picked from later."""
        if spec is None:
            return cls.off()
        with sessions.begin() as session:
            candidates = Candidates.search(session, window)
        return cls(spec, window, remembered(candidates, spec.memory_lines), sessions, candidates)

    @property
    def on(self) -> bool:
        return self.spec is not None

    async def voice(self, persona: str | None) -> list[str]:
        """Voice lines for ``persona`` (none when memory is off or the friend is unknown)."""
        if not persona or self.spec is None or self.window is None or self._sessions is None:
            return []
        sender_id = self.window.sender_id(persona)
        if sender_id is None or not self.spec.voice_lines:
            return []
        window, n, sessions = self.window, self.spec.voice_lines, self._sessions
        candidates = self._candidates

        def work() -> list[str]:
            with sessions.begin() as session:
                return voice_of(session, window, candidates, sender_id, n)

        return await asyncio.to_thread(work)

    def prompt(
        self, context: Sequence[str], persona: str | None = None, voice: Sequence[str] = ()
    ) -> str:
        """``build_prompt`` with this memory (and ``voice``) before the context."""
        return build_prompt(context, persona, memory=self.lines, voice=voice)


# --- /recall TOPIC -------------------------------------------------------------------------------

RECALL_USAGE = "Usage: /recall TOPIC (what did we say about it?)"
RECALL_RESULTS = 5  # found messages listed (and given a model trained with memory)
RECALL_SHOWN_CHARS = 200  # each found message is cut to this in the list


@dataclass(frozen=True)
class Recollection:
    """What ``/recall TOPIC`` found (oldest first) and a friend's answer (None: nobody to
    speak as, or nothing found)."""

    topic: str
    found: list[FoundMessage]
    reply: Reply | None = None

    def found_lines(self) -> list[str]:
        """``2026-10-02 Hugo: text`` per message, each cut to a readable length."""
        return [_clip(found_line(m), RECALL_SHOWN_CHARS) for m in self.found]


def recall_terms(topic: str) -> list[str]:
    """The words to search for: the memory terms of the topic, else its words as typed
    (``/recall Al`` is a name too short to be a memory term)."""
    return memory_terms(topic) or topic.split()


def recall(session: Session, chat_id: int, topic: str) -> list[FoundMessage]:
    """The chat's messages about ``topic``, best ``RECALL_RESULTS``, oldest first."""
    found = search_messages(
        session,
        chat_id,
        recall_terms(topic),
        rank=rank,
        candidates=CANDIDATES,
        limit=RECALL_RESULTS,
    )
    return sorted(found, key=lambda m: (m.date, m.message_id))


def recall_teller(found: Sequence[FoundMessage], friends: Friends, asker: str) -> str | None:
    """Who answers: whoever said the best-matching thing, when the bot may speak as them and
    they did not ask; None otherwise (the caller picks a friend)."""
    for message in sorted(found, key=lambda m: -m.rank):
        name = friends.find(message.sender_name)
        if name is not None and not same_name(name, asker):
            return name
    return None


def recall_prompt(
    context: Sequence[str],
    asker: str,
    topic: str,
    persona: str,
    memory: Sequence[FoundMessage],
    voice: Sequence[str] = (),
) -> str:
    """The chat, the asker's question about ``topic``, answered as ``persona``; ``memory``
    (what was found, least relevant first) only for a model trained with memory lines."""
    lines = [*context, format_turn(asker, f"remember {topic}?")]
    ranked = sorted(memory, key=lambda m: m.rank)
    remembered = [memory_line(day(m.date), m.sender_name, m.text) for m in ranked]
    return build_prompt(lines, persona, memory=remembered, voice=voice)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
