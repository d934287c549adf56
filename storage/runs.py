"""The record of retraining runs: one row per attempt, written at start and at the decision.

A run is inserted as ``running`` before any work starts, so a crash leaves evidence (a
running row with no end) rather than nothing. Functions take a session and never commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from storage.models import TrainingRun, utcnow

RUNNING = "running"
FINAL_STATUSES = frozenset({"skipped", "promoted", "rejected", "failed"})
TRIGGERS = frozenset({"schedule", "manual", "cli"})
_FIELDS = frozenset(
    {
        "finished_at",
        "inputs_fingerprint",
        "candidate_dir",
        "previous_dir",
        "candidate_metrics",
        "current_metrics",
        "decision",
        "error",
    }
)


def start_run(session: Session, trigger: str, owner: str | None = None) -> TrainingRun:
    """Insert a ``running`` run and return it with its id (flushed, not committed).

    ``owner`` names the process doing it (``storage.locks.make_holder``'s ``host:pid:id``),
    so that a reader can tell a run whose process is gone from one still going.
    """
    if trigger not in TRIGGERS:
        raise ValueError(f"trigger must be one of {sorted(TRIGGERS)}, got {trigger!r}")
    run = TrainingRun(status=RUNNING, trigger=trigger, started_at=utcnow(), owner=owner)
    session.add(run)
    session.flush()
    return run


def update_run(session: Session, run_id: int, **fields: Any) -> TrainingRun:
    """Set fields of a run still in progress (e.g. the inputs fingerprint once computed)."""
    unknown = set(fields) - _FIELDS
    if unknown:
        raise TypeError(f"unknown TrainingRun fields: {sorted(unknown)}")
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise LookupError(f"no training run with id {run_id}")
    for name, value in fields.items():
        setattr(run, name, value)
    session.flush()
    return run


def finish_run(session: Session, run_id: int, *, status: str, **fields: Any) -> None:
    """Close a run with its final ``status`` and any fields (metrics, decision, error...).

    ``finished_at`` defaults to now. Unknown field names raise TypeError, so a typo cannot
    silently lose a metric.
    """
    if status not in FINAL_STATUSES:
        raise ValueError(f"status must be one of {sorted(FINAL_STATUSES)}, got {status!r}")
    fields.setdefault("finished_at", utcnow())
    run = update_run(session, run_id, **fields)
    run.status = status
    session.flush()


def get_run(session: Session, run_id: int) -> TrainingRun | None:
    """The run with this id, or None."""
    return session.get(TrainingRun, run_id)


def recent_runs(session: Session, limit: int = 10) -> list[TrainingRun]:
    """The last ``limit`` runs, newest first (``friendbot runs``, ``/runs``)."""
    stmt = select(TrainingRun).order_by(TrainingRun.started_at.desc(), TrainingRun.id.desc())
    return list(session.scalars(stmt.limit(limit)))


def last_run(session: Session, status: str | None = None) -> TrainingRun | None:
    """The newest run, or the newest with ``status`` (e.g. the last ``promoted`` one)."""
    stmt = select(TrainingRun).order_by(TrainingRun.started_at.desc(), TrainingRun.id.desc())
    if status is not None:
        stmt = stmt.where(TrainingRun.status == status)
    return session.scalars(stmt.limit(1)).first()


def finished_after(
    session: Session, finished_at: datetime | None, run_id: int = 0
) -> list[TrainingRun]:
    """Runs finished after the mark ``(finished_at, run_id)`` (all finished runs when
    ``finished_at`` is None), oldest first: what admins have not been told about yet.

    The mark is a pair rather than the id alone: a long run may finish after a later, quick
    one (a skipped one) and must still be found.
    """
    stmt = (
        select(TrainingRun)
        .where(TrainingRun.finished_at.is_not(None))
        .order_by(TrainingRun.finished_at, TrainingRun.id)
    )
    if finished_at is not None:
        stmt = stmt.where(
            or_(
                TrainingRun.finished_at > finished_at,
                and_(TrainingRun.finished_at == finished_at, TrainingRun.id > run_id),
            )
        )
    return list(session.scalars(stmt))
