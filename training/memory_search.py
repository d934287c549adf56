"""Which older messages a context remembers: one rule for the bot and ``prepare --memory``.

A model learns to use ``memory:`` and ``voice:`` lines only from lines picked the way the bot
will pick them, so both sides search the same way:

1. **Terms**: ``training.formatting.memory_terms`` of the context window, at most
   ``TERMS`` of them (longest first, a free proxy for rarity; no stop words). No corpus
   statistics: the bot cannot afford them per reply, and ``prepare`` would see others.
2. **Candidates**: for each of the terms' words (``query_words``), the ``CANDIDATES //
   words`` newest messages of the chat, older than the window, that hold it in their text
   or their sender's name (a full-text match: SQLite FTS5 in both; PostgreSQL's
   ``tsvector`` for a bot on it). Per word, so that a rare word's mention weeks ago is
   found although a common word was said a thousand times since; bounded, so a word half
   the chat uses costs no more than a rare one.
3. **Ranking**: BM25 (k1 1.2, b 0.75) over the candidates, the sender's name counting half as
   much as the text, each term weighed by how few *candidates* hold it (``idf``). The
   statistics come from the search's own candidates, never from the rest of the database,
   so the same history gives the same order whatever else is stored (other chats, later
   messages, another backend). A common word weighs little without being dropped. Ties go
   to the newer message (candidates come newest first; the sort is stable).
4. **Memory** is the best ``memory_lines`` candidates; **voice** the best ``voice_lines``
   candidates of the friend being played, padded with that friend's latest older messages
   when fewer match.

Words are folded as FTS5's ``unicode61 remove_diacritics 2`` folds them (case, accents), so
the words counted here are the words the index matched.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

TERMS = 8
"""Words searched per context window (each costs one index lookup, newest first; 5, 6 and
8 measured the same over a million messages, so none is dropped for speed)."""
CANDIDATES = 256
"""Matches ranked per search at most, shared out among its words (see the module doc)."""
NAME_WEIGHT = 0.5
"""A term in the sender's name counts half as much as one in the text."""
K1 = 1.2
B = 0.75

_WORD = re.compile(r"[^\W_]+")  # letters and digits, as FTS5's unicode61 splits words
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
"""Combining diacritical marks: what is left of an accent once a letter is decomposed."""


def fold_words(text: str) -> list[str]:
    """``text``'s words, lower-cased and without accents (``Café`` -> ``cafe``)."""
    text = text.casefold()
    if not text.isascii():  # most chat text is: skip the decomposition then
        text = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return _WORD.findall(text)


def query_words(terms: Sequence[str]) -> list[str]:
    """The distinct words of ``terms`` as the search splits them (letters and digits),
    lower-cased, in order: one candidate query each (``storage.search.search_words``)."""
    return list(dict.fromkeys(w for t in terms for w in _WORD.findall(t.casefold())))


def per_word(words: Sequence[str]) -> int:
    """How many newest matches each word brings."""
    return max(1, CANDIDATES // max(1, len(words)))


@dataclass(frozen=True, slots=True)
class Doc:
    """What ranking needs of one candidate message: how often it holds each word (a word
    of the sender's name counting ``NAME_WEIGHT``), and its length in words."""

    tf: dict[str, float]
    length: int

    @classmethod
    def of(cls, text: str, sender_name: str) -> Doc:
        tf: dict[str, float] = {}
        words, name = fold_words(text), fold_words(sender_name)
        for w in words:
            tf[w] = tf.get(w, 0.0) + 1.0
        for w in name:
            tf[w] = tf.get(w, 0.0) + NAME_WEIGHT
        return cls(tf, len(words) + len(name))


def scores(terms: Sequence[str], docs: Sequence[Doc]) -> list[float]:
    """The BM25 score of each candidate for ``terms`` (higher: better; module doc, step 3)."""
    if not docs:
        return []
    wanted = list(dict.fromkeys(w for term in terms for w in fold_words(term)))
    n = len(docs)
    avgdl = max(1.0, sum(d.length for d in docs) / n)
    # each candidate's frequencies of the words it holds (most hold one or two of them)
    tfs = [{t: d.tf[t] for t in d.tf.keys() & wanted} for d in docs]
    held = dict.fromkeys(wanted, 0)
    for tf in tfs:
        for t in tf:
            held[t] += 1
    idf = {t: math.log(1 + (n - k + 0.5) / (k + 0.5)) for t, k in held.items()}
    result = []
    for d, tf in zip(docs, tfs, strict=True):
        norm = K1 * (1 - B + B * d.length / avgdl)
        # summed in ``wanted`` order, so the float result never depends on set order
        result.append(sum(idf[t] * tf[t] * (K1 + 1) / (tf[t] + norm) for t in wanted if t in tf))
    return result


def best(terms: Sequence[str], docs: Sequence[Doc]) -> list[int]:
    """Candidate indices, best first; ``docs`` newest first, so ties keep the newer."""
    score = scores(terms, docs)
    return sorted(range(len(docs)), key=lambda i: -score[i])
