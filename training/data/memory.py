"""``prepare --memory``: what each pair may remember of older sessions, and its speaker's voice.

The bot gives the model, before the live conversation, a few older messages relevant to it
(``memory:`` lines) and, for the friend it plays, a few of that friend's own earlier messages
(``voice:`` lines; ``training.formatting``). A model learns to use such lines only if it was
trained with them, so ``prepare --memory`` builds the same for every pair.

Both are picked by ``training.memory_search``, the rule the bot searches its database with
(same terms, the same ``CANDIDATES`` newest matches, the same ranking, the same voice
fallback), here over an in-memory SQLite FTS5 index of the chat's earlier training messages:

- **memory**: the ``MEMORY_LINES`` best candidates for the pair's context;
- **voice**: the ``VOICE_LINES`` best candidates *of the pair's responder*, padded with that
  friend's most recent earlier messages (a friend's pet phrases are worth showing even when
  the topic is new).

**Where memory may come from (no leakage).** Only from *train-split sessions of the same chat
that precede the pair's session*, for pairs of every split. The index is filled session by
session in time order, and a session's messages are added only after all of its pairs were
queried and only when it is a training session. So:

- nothing of the pair's own session is ever remembered (neither its context window nor what
  follows it), nor anything later;
- no validation or test message ever appears in any model input: a train pair that
  remembered a test message would put test text into training, and evaluation would then
  measure recall of text the model saw. Letting validation/test pairs remember earlier
  validation/test sessions would be fair (it is their past) but makes the two kinds of pairs
  see different memories; one rule for all keeps it simple and safe.

**Cost.** A search ranks at most ``CANDIDATES`` messages, so a word found in much of the
history costs no more than a rare one. Results are cached per session by their word list.

**Where the bot differs, on purpose.** The bot's candidates are every older message of the
chat (its database has no splits, and the earlier part of the current conversation is
memory too); here only earlier *training sessions*. Where the two histories are the same, so
are the lines (``tests/training/test_memory_matches_bot.py``).
"""

from __future__ import annotations

import heapq
import sqlite3
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise

import numpy as np
import pyarrow as pa

from training.data.columns import as_numpy
from training.formatting import memory_line, memory_terms, voice_line
from training.memory_search import TERMS, Doc, best, per_word, query_words

MEMORY_LINES = 3
VOICE_LINES = 2
MEMORY_TERMS = TERMS  # the bot's query
MEMORY_COLUMNS = (
    ("memory", pa.list_(pa.string())),
    ("voice", pa.list_(pa.string())),
)
SOURCE_RULE = "train-split sessions of the same chat that end before the pair's session"


def schema_with_memory(schema: pa.Schema) -> pa.Schema:
    """The pair schema plus the ``memory`` and ``voice`` list columns."""
    for name, kind in MEMORY_COLUMNS:
        schema = schema.append(pa.field(name, kind))
    return schema


@dataclass(frozen=True)
class PairMemory:
    """For every turn, the turns it remembers (``-1``: none), and their rendered lines.

    ``memory[i]`` / ``voice[i]`` hold turn indices, best first; ``lines`` maps each turn index
    that is remembered somewhere (sorted ``referenced``) to its memory and voice line.
    """

    memory: np.ndarray  # (turns, MEMORY_LINES) int64
    voice: np.ndarray  # (turns, VOICE_LINES) int64
    referenced: np.ndarray  # sorted turn indices
    memory_text: pa.Array  # memory line of each referenced turn
    voice_text: pa.Array  # voice line of each referenced turn
    queries: int  # full-text searches run (cache misses)

    def columns(self, rows: np.ndarray) -> dict[str, pa.Array]:
        """The ``memory`` and ``voice`` columns of the pairs whose responses are ``rows``."""
        return {
            "memory": self._lists(self.memory[rows], self.memory_text),
            "voice": self._lists(self.voice[rows], self.voice_text),
        }

    def attach(self, pairs: pa.Table, rows: np.ndarray) -> pa.Table:
        """``pairs`` (built for turn ``rows``) with the two list columns appended."""
        for name, column in self.columns(rows).items():
            pairs = pairs.append_column(name, column)
        return pairs

    def spec(self) -> dict[str, object]:
        """What stats.json records: a dataset with memory, and how it was built."""
        return {
            "memory_lines": MEMORY_LINES,
            "voice_lines": VOICE_LINES,
            "source": SOURCE_RULE,
            "pairs_with_memory": int((self.memory[:, 0] >= 0).sum()),
            "pairs_with_voice": int((self.voice[:, 0] >= 0).sum()),
            "searches": self.queries,
        }

    def _lists(self, picked: np.ndarray, text: pa.Array) -> pa.Array:
        # least relevant first, as the bot gives them (bot/memory.py): a short source length
        # drops the oldest lines first, so the weakest memory goes before the best
        picked = picked[:, ::-1]
        valid = picked >= 0
        offsets = np.zeros(len(picked) + 1, dtype=np.int32)
        np.cumsum(valid.sum(axis=1), out=offsets[1:])
        where = np.searchsorted(self.referenced, picked[valid])  # row-major: weakest first
        values = text.take(pa.array(where, type=pa.int64())) if where.size else text.slice(0, 0)
        return pa.ListArray.from_arrays(pa.array(offsets), values)


def build_memory(
    turns: pa.Table,
    starts: np.ndarray,
    lo: np.ndarray,
    eligible: np.ndarray,
    is_train: np.ndarray,
) -> PairMemory:
    """Memory and voice turns for every ``eligible`` turn (see the module doc for the rule).

    ``turns`` are ordered by chat and time, ``starts`` marks each session's first turn,
    ``lo[i]`` is the first context turn of turn ``i`` and ``is_train[i]`` whether turn ``i``'s
    session is in the train split.
    """
    n = turns.num_rows
    memory = np.full((n, MEMORY_LINES), -1, dtype=np.int64)
    voice = np.full((n, VOICE_LINES), -1, dtype=np.int64)
    chat = as_numpy(turns["chat_id"])
    who = _sender_codes(turns["sender_id"])
    bounds = np.r_[np.flatnonzero(starts), n]
    names = turns["sender"].to_pylist()
    index, searches = _Index(), 0
    for a, b in pairwise(bounds):
        a, b = int(a), int(b)
        if a > 0 and chat[a] != chat[a - 1]:
            searches += index.searches
            index = _Index()  # memory never crosses chats
        texts = turns["text"].slice(a, b - a).to_pylist()
        words = [_words(text) for text in texts]
        rows = a + np.flatnonzero(eligible[a:b])
        if index.size and rows.size:
            cache: dict[tuple[str, ...], list[int]] = {}
            for row in rows:
                context = set().union(*words[int(lo[row]) - a : int(row) - a])
                terms = tuple(_ranked(context))
                if terms not in cache:
                    cache[terms] = index.search(terms)
                found, sender = cache[terms], int(who[row])
                memory[row, : min(MEMORY_LINES, len(found))] = found[:MEMORY_LINES]
                own = index.voice(found, sender)
                voice[row, : len(own)] = own
        if is_train[a]:
            index.add(range(a, b), texts, names[a:b], who[a:b])
    return _rendered(turns, memory, voice, searches + index.searches)


class _Index:
    """An in-memory FTS5 index of one chat's training messages, added session by session,
    searched by ``training.memory_search``'s rule (as the bot searches its database)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute(
            "CREATE VIRTUAL TABLE m USING fts5(text, sender_name, "
            "tokenize='unicode61 remove_diacritics 2')"  # the bot's index tokenizes alike
        )
        self.size = 0
        self.searches = 0
        self.docs: dict[int, Doc] = {}
        self.sender: dict[int, int] = {}  # turn -> sender code
        self.recent: dict[int, deque[int]] = {}  # each sender's newest turns, newest first

    def add(self, turn_ids: range, texts: list[str], names: list[str], who: np.ndarray) -> None:
        senders = who.tolist()
        self.db.executemany(
            "INSERT INTO m(rowid, text, sender_name) VALUES (?, ?, ?)",
            zip(turn_ids, texts, names, strict=True),
        )
        for i, text, name, sender in zip(turn_ids, texts, names, senders, strict=True):
            self.docs[i] = Doc.of(text, name)
            self.sender[i] = sender
            self.recent.setdefault(sender, deque(maxlen=VOICE_LINES)).appendleft(i)
        self.size += len(texts)

    def search(self, terms: tuple[str, ...]) -> list[int]:
        """The candidate turns for ``terms``, best first (``training.memory_search``)."""
        self.searches += 1
        if not terms:
            return []
        words = query_words(terms)
        arm = "SELECT rowid FROM m WHERE m MATCH ? ORDER BY rowid DESC LIMIT ?"
        cursor = self.db.execute(
            " UNION ".join(f"SELECT * FROM ({arm})" for _ in words) + " ORDER BY 1 DESC",
            [x for w in words for x in (f'{{text sender_name}} : "{w}"', per_word(words))],
        )
        found = [r for (r,) in cursor]  # newest first, as the bot's candidates
        return [found[i] for i in best(terms, [self.docs[r] for r in found])]

    def voice(self, found: list[int], who: int) -> list[int]:
        """Sender ``who``'s best candidates, padded with their latest messages."""
        own = [r for r in found if self.sender[r] == who][:VOICE_LINES]
        if len(own) < VOICE_LINES:
            recent = self.recent.get(who, ())
            own += [r for r in recent if r not in own][: VOICE_LINES - len(own)]
        return own


def _words(text: str) -> set[str]:
    """A message's search words (``memory_terms`` without the limit)."""
    return set(memory_terms(text, limit=1 << 30))


def _ranked(words: set[str]) -> list[str]:
    """``memory_terms`` of a context from its messages' words: the same words, same order."""
    return heapq.nsmallest(MEMORY_TERMS, words, key=lambda w: (-len(w), w))


def _sender_codes(sender_id: pa.ChunkedArray | pa.Array) -> np.ndarray:
    encoded = sender_id.combine_chunks() if isinstance(sender_id, pa.ChunkedArray) else sender_id
    return as_numpy(encoded.dictionary_encode().indices).astype(np.int64)


def _rendered(turns: pa.Table, memory: np.ndarray, voice: np.ndarray, queries: int) -> PairMemory:
    """Render the lines of every remembered turn once (``memory_line`` / ``voice_line``)."""
    referenced = np.unique(np.r_[memory[memory >= 0], voice[voice >= 0]])
    picked = turns.select(["date", "sender", "text"]).take(pa.array(referenced, type=pa.int64()))
    days = [datetime.fromtimestamp(d, UTC).strftime("%Y-%m-%d") for d in picked["date"].to_pylist()]
    senders, texts = picked["sender"].to_pylist(), picked["text"].to_pylist()
    return PairMemory(
        memory=memory,
        voice=voice,
        referenced=referenced,
        memory_text=pa.array(
            [memory_line(d, s, t) for d, s, t in zip(days, senders, texts, strict=True)],
            pa.string(),
        ),
        voice_text=pa.array([voice_line(t) for t in texts], pa.string()),
        queries=queries,
    )
