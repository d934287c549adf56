"""Which older messages a context remembers: one rule for the bot and ``prepare --memory``.

A model learns to use ``memory:`` and ``voice:`` lines only from lines picked the way the bot
will pick them, so both sides search the same way:

1. **Terms**: ``training.formatting.memory_terms`` of the context window (at most 8 words,
   longest first, no stop words). No corpus statistics: the bot cannot afford them per
   reply, and ``prepare`` would otherwise see different ones.
2. **Candidates**: the ``CANDIDATES`` newest messages of the chat, older than the window,
   that hold any term in their text or their sender's name (a full-text match: SQLite FTS5
   in both; PostgreSQL's ``tsvector`` for a bot on it). Bounding them bounds the cost of a
   word that half the chat uses.
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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

CANDIDATES = 500
"""Matches ranked per search: the newest ones (see the module doc)."""
NAME_WEIGHT = 0.5
"""A term in the sender's name counts half as much as one in the text."""
K1 = 1.2
B = 0.75

_WORD = re.compile(r"[^\W_]+")  # letters and digits, as FTS5's unicode61 splits words


def fold_words(text: str) -> list[str]:
    """``text``'s words, lower-cased and without accents (``Café`` -> ``cafe``)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WORD.findall(plain)


@dataclass(frozen=True, slots=True)
class Doc:
    """What ranking needs of one candidate message: its words and its length."""

    text: Counter[str]
    name: Counter[str]
    length: int

    @classmethod
    def of(cls, text: str, sender_name: str) -> Doc:
        words, name = fold_words(text), fold_words(sender_name)
        return cls(Counter(words), Counter(name), len(words) + len(name))


def scores(terms: Sequence[str], docs: Sequence[Doc]) -> list[float]:
    """The BM25 score of each candidate for ``terms`` (higher: better; module doc, step 3)."""
    if not docs:
        return []
    wanted = list(dict.fromkeys(w for term in terms for w in fold_words(term)))
    n = len(docs)
    avgdl = max(1.0, sum(d.length for d in docs) / n)
    held = {t: sum(1 for d in docs if t in d.text or t in d.name) for t in wanted}
    idf = {t: math.log(1 + (n - k + 0.5) / (k + 0.5)) for t, k in held.items() if k}
    result = []
    for d in docs:
        norm = K1 * (1 - B + B * d.length / avgdl)
        score = 0.0
        for t, weight in idf.items():
            tf = d.text.get(t, 0) + NAME_WEIGHT * d.name.get(t, 0)
            if tf:
                score += weight * tf * (K1 + 1) / (tf + norm)
        result.append(score)
    return result


def best(terms: Sequence[str], docs: Sequence[Doc]) -> list[int]:
    """Candidate indices, best first; ``docs`` newest first, so ties keep the newer."""
    score = scores(terms, docs)
    return sorted(range(len(docs)), key=lambda i: -score[i])
