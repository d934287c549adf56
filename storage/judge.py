"""The friends as judges: "real or bot?" rounds, their votes, and the fool rate they measure.

A round shows an excerpt of a chat and one more line signed by a friend: their real next
message or the model's reply. The *fool rate* of a model is the share of votes on its lines
that said *Real*; beside it, the share of votes on real lines that said *Real* is what a
perfect imitation would score (friends doubt real lines too). Each rate comes with a Wilson
95% interval, which stays inside [0, 1] and is honest with the few votes a group gives.

Only rounds that were revealed count: a round still open is a vote in progress. Functions
take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.history import clip, dialect_insert
from storage.models import GuessRound, GuessVote, Message, as_utc, utcnow

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``hits`` out of ``n`` ((0, 1) when there are no votes)."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    """``real`` of ``votes`` said *Real*; the share and its 95% interval."""

    real: int
    votes: int

    @property
    def value(self) -> float | None:
        return self.real / self.votes if self.votes else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.real, self.votes)

    def text(self) -> str:
        """``40% (95% CI 20-63%, 12 votes)``, or ``no votes``."""
        if not self.votes:
            return "no votes"
        low, high = self.interval
        return (
            f"{self.value:.0%} (95% CI {low:.0%}-{high:.0%}, "
            f"{self.votes} vote{'s' if self.votes != 1 else ''})"
        )

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {"rate": self.value, "low": low, "high": high, "real": self.real,
                "votes": self.votes}  # fmt: skip


@dataclass(frozen=True)
class Judgement:
    """For one model (or friend): how often its bot lines and the real lines were voted real."""

    key: str
    fooled: Rate  # votes on bot lines that said Real: the fool rate
    real_as_real: Rate  # votes on real lines that said Real
    rounds: int

    def summary(self) -> str:
        """``fool rate 40% (95% CI ...); real lines voted Real 55% (...)``."""
        return f"fool rate {self.fooled.text()}; real lines voted Real {self.real_as_real.text()}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Judgement:
        """Back from :meth:`to_dict` (a run's recorded metrics)."""
        fooled, real = data["fool_rate"], data["real_voted_real"]
        return cls(
            key=str(data.get("key", "")),
            fooled=Rate(int(fooled["real"]), int(fooled["votes"])),
            real_as_real=Rate(int(real["real"]), int(real["votes"])),
            rounds=int(data.get("rounds", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rounds": self.rounds,
            "fool_rate": self.fooled.to_dict(),
            "real_voted_real": self.real_as_real.to_dict(),
        }


# --- rounds ----------------------------------------------------------------------------------


def start_round(
    session: Session,
    *,
    chat_id: int,
    model_id: str,
    friend: str,
    friend_id: int | None,
    is_bot: bool,
    seed: int,
    excerpt_ids: Sequence[int] | dict[str, Any],
    real_message_id: int | None,
    votes_needed: int,
    deadline_at: datetime,
    started_at: datetime | None = None,
) -> GuessRound:
    """Record a new round (flushed, so it has its id); the chat row must exist.

    ``excerpt_ids`` are the stored messages shown, or a :func:`dataset_ref` for an excerpt of
    the training data (then ``real_message_id`` is None: nothing of it is in ``messages``).
    """
    row = GuessRound(
        chat_id=chat_id,
        model_id=model_id,
        friend=clip(friend) or "?",
        friend_id=friend_id,
        is_bot=is_bot,
        seed=seed,
        excerpt_ids=dict(excerpt_ids) if isinstance(excerpt_ids, dict) else list(excerpt_ids),
        real_message_id=real_message_id,
        votes_needed=votes_needed,
        started_at=as_utc(started_at) if started_at else utcnow(),
        deadline_at=as_utc(deadline_at),
    )
    session.add(row)
    session.flush()
    return row


def dataset_ref(
    file: str, row: int, fingerprint: str, speakers: Iterable[str], message_id: int | None
) -> dict[str, Any]:
    """Where a round's excerpt came from when it is a row of the training data's test split.

    Stored in ``excerpt_ids`` in place of message ids (no migration: the column is JSON, and a
    list still means stored messages). A pointer, not the texts: the round keeps no copy of
    anyone's words. ``speakers`` (the names in the excerpt; the judged line's is the round's
    ``friend``) let ``/optout`` find the rounds that showed a member's lines; ``fingerprint``
    names the dataset version the row number refers to.
    """
    return {
        "dataset": file,
        "row": row,
        "fingerprint": fingerprint,
        "speakers": list(dict.fromkeys(speakers)),
        "message_id": message_id,
    }


def round_source(row: GuessRound) -> str:
    """``"dataset"`` for a round played from the training data, else ``"history"``."""
    return "dataset" if isinstance(row.excerpt_ids, dict) else "history"


def excerpt_pool(session: Session, chat_id: int, before: datetime, limit: int) -> list[Message]:
    """The chat's newest ``limit`` messages dated at or before ``before``, oldest first: what
    a round's excerpt is picked from (the caller leaves out the bot's and opted-out lines)."""
    newest_first = session.scalars(
        select(Message)
        .where(Message.chat_id == chat_id, Message.date <= as_utc(before))
        .order_by(Message.date.desc(), Message.message_id.desc())
        .limit(limit)
    ).all()
    return list(reversed(newest_first))


def set_posted(session: Session, round_id: int, message_id: int) -> None:
    """The round was posted as ``message_id`` (its keyboard is there)."""
    session.execute(
        update(GuessRound).where(GuessRound.id == round_id).values(posted_message_id=message_id)
    )


def get_round(session: Session, round_id: int) -> GuessRound | None:
    return session.get(GuessRound, round_id, populate_existing=True)


def open_rounds(session: Session) -> list[GuessRound]:
    """Rounds not revealed yet, oldest first (a restarted bot schedules their timeouts)."""
    stmt = select(GuessRound).where(GuessRound.revealed_at.is_(None)).order_by(GuessRound.id)
    return list(session.scalars(stmt))


def open_round_in(session: Session, chat_id: int) -> GuessRound | None:
    """The chat's round still waiting for votes, if any."""
    stmt = (
        select(GuessRound)
        .where(GuessRound.chat_id == chat_id, GuessRound.revealed_at.is_(None))
        .order_by(GuessRound.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def last_started(session: Session, chat_id: int) -> datetime | None:
    """When the chat's newest round started (the cooldown counts from it)."""
    return session.scalar(
        select(func.max(GuessRound.started_at)).where(GuessRound.chat_id == chat_id)
    )


def discard_round(session: Session, round_id: int) -> None:
    """Forget a round that could not be posted (its votes go with it)."""
    session.execute(GuessVote.__table__.delete().where(GuessVote.round_id == round_id))
    session.execute(GuessRound.__table__.delete().where(GuessRound.id == round_id))


def close_round(session: Session, round_id: int, when: datetime | None = None) -> bool:
    """Mark the round revealed; True only for the call that closed it.

    Votes and the timeout race to reveal a round: a conditional UPDATE lets exactly one win.
    """
    result = session.execute(
        update(GuessRound)
        .where(GuessRound.id == round_id, GuessRound.revealed_at.is_(None))
        .values(revealed_at=as_utc(when) if when else utcnow())
    )
    return result.rowcount == 1


def forget_member(session: Session, user_id: int, names: Iterable[str] = ()) -> int:
    """A member opted out: delete their votes and the rounds that judged their lines (an
    opted-out member is neither stored nor imitated, and their name leaves the reports).
    Returns the rounds deleted.

    Rounds from the training data point at a dataset row rather than at stored messages, so
    ``names`` (their display name and username) find them too: a round judging a line signed
    with one of them and no user id is deleted, and a round that showed their lines in the
    excerpt loses its pointer (as a stored round's excerpt loses their deleted messages; the
    votes still count).
    """
    keys = {_name_key(n) for n in names} - {""}
    about = set(session.scalars(select(GuessRound.id).where(GuessRound.friend_id == user_id)))
    from_data = session.execute(
        select(GuessRound.id, GuessRound.friend, GuessRound.friend_id, GuessRound.excerpt_ids)
    ).all()
    for round_id, friend, friend_id, ref in from_data:
        if not isinstance(ref, dict) or round_id in about:
            continue
        if friend_id is None and _name_key(friend) in keys:
            about.add(round_id)
        elif keys & {_name_key(str(s)) for s in ref.get("speakers") or ()}:
            kept = {k: ref[k] for k in ("dataset", "fingerprint") if k in ref}
            session.execute(
                update(GuessRound)
                .where(GuessRound.id == round_id)
                .values(excerpt_ids={**kept, "forgotten": True})
            )
    session.execute(GuessVote.__table__.delete().where(GuessVote.voter_id == user_id))
    if not about:
        return 0
    session.execute(GuessVote.__table__.delete().where(GuessVote.round_id.in_(about)))
    return session.execute(GuessRound.__table__.delete().where(GuessRound.id.in_(about))).rowcount


def _name_key(name: str) -> str:
    """A name as opt-outs compare them (bot.replies.Friends): spaces collapsed, any case,
    a username with or without its @."""
    return " ".join(name.split()).casefold().lstrip("@")


# --- votes -----------------------------------------------------------------------------------


def add_vote(session: Session, round_id: int, voter_id: int, guess_real: bool) -> bool:
    """Record a member's vote; False when they had voted in this round already."""
    stmt = (
        dialect_insert(session, GuessVote)
        .values(round_id=round_id, voter_id=voter_id, guess_real=guess_real, voted_at=utcnow())
        .on_conflict_do_nothing(index_elements=[GuessVote.round_id, GuessVote.voter_id])
    )
    return session.execute(stmt.returning(GuessVote.id)).first() is not None


def vote_counts(session: Session, round_id: int) -> tuple[int, int]:
    """(votes for Real, votes for Bot) in the round."""
    real, total = session.execute(
        select(
            func.count(GuessVote.id).filter(GuessVote.guess_real),
            func.count(GuessVote.id),
        ).where(GuessVote.round_id == round_id)
    ).one()
    return int(real), int(total) - int(real)


# --- what the votes say ----------------------------------------------------------------------


def judgements(
    session: Session,
    by: str,
    *,
    chat_id: int | None = None,
    model_id: str | None = None,
    since: datetime | None = None,
) -> list[Judgement]:
    """Fool rate and real-voted-real rate per ``by`` (``"model"`` or ``"friend"``), over
    revealed rounds (of one chat, one model, since a date, when given), most votes first."""
    column = {"model": GuessRound.model_id, "friend": GuessRound.friend}[by]
    stmt = (
        select(
            column,
            GuessRound.is_bot,
            func.count(func.distinct(GuessRound.id)),
            func.count(GuessVote.id).filter(GuessVote.guess_real),
            func.count(GuessVote.id),
        )
        .select_from(GuessRound)
        .outerjoin(GuessVote, GuessVote.round_id == GuessRound.id)
        .where(GuessRound.revealed_at.is_not(None))
        .group_by(column, GuessRound.is_bot)
    )
    if chat_id is not None:
        stmt = stmt.where(GuessRound.chat_id == chat_id)
    if model_id is not None:
        stmt = stmt.where(GuessRound.model_id == model_id)
    if since is not None:
        stmt = stmt.where(GuessRound.started_at >= as_utc(since))
    return _combine(session.execute(stmt).all())


def _combine(rows: Iterable[Any]) -> list[Judgement]:
    parts: dict[str, dict[bool, tuple[int, int, int]]] = {}
    for key, is_bot, rounds, real, votes in rows:
        parts.setdefault(str(key), {})[bool(is_bot)] = (int(rounds), int(real), int(votes))
    out = []
    for key, sides in parts.items():
        bot_rounds, bot_real, bot_votes = sides.get(True, (0, 0, 0))
        real_rounds, real_real, real_votes = sides.get(False, (0, 0, 0))
        out.append(
            Judgement(
                key=key,
                fooled=Rate(bot_real, bot_votes),
                real_as_real=Rate(real_real, real_votes),
                rounds=bot_rounds + real_rounds,
            )
        )
    return sorted(out, key=lambda j: (-(j.fooled.votes + j.real_as_real.votes), j.key))


def model_judgement(
    session: Session, model_id: str, since: datetime | None = None
) -> Judgement | None:
    """One model's judgement over every chat (None when it has no revealed round)."""
    found = judgements(session, "model", model_id=model_id, since=since)
    return found[0] if found else None
