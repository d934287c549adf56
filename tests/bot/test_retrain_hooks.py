"""The bot's side of retraining (bot/retrain_hooks.py): which runs admins hear about, and how.

The full loop (a promoted model served by the running bot, /retrain, /runs, the schedule in
the bot) is in tests/e2e/test_retrain_e2e.py; these cover the bookkeeping in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.retrain_hooks import RetrainHooks, format_outcome, format_run, parse_outcome
from storage.db import make_engine, session_factory, upgrade
from storage.runs import finish_run, start_run

Sessions = sessionmaker[Session]


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[Sessions]:
    engine = make_engine(f"sqlite:///{tmp_path / 'friendbot.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def hooks(sessions: Sessions, started_at: datetime) -> RetrainHooks:
    service = SimpleNamespace(sessions=sessions, settings=SimpleNamespace(admin_user_ids={1}))
    made = RetrainHooks(None, service, None)  # type: ignore[arg-type]
    made.started_at = started_at
    return made


def add_run(sessions: Sessions, status: str, started: datetime, finished: datetime | None) -> int:
    with sessions.begin() as session:
        run = start_run(session, "schedule")
        run.started_at = started
        if finished is not None:
            finish_run(session, run.id, status=status, finished_at=finished, decision=status)
        return run.id


def test_admins_hear_of_each_finished_run_once_across_restarts(sessions: Sessions) -> None:
    t0 = datetime(2024, 6, 1, 4, 0, tzinfo=UTC)
    before_start = add_run(sessions, "promoted", t0, t0 + timedelta(minutes=5))
    long_run = add_run(sessions, "running", t0 + timedelta(minutes=10), None)

    bot = hooks(sessions, started_at=t0 + timedelta(minutes=20))
    assert bot._new_finished_runs() == []  # history from before the bot started: not news

    quick = add_run(sessions, "skipped", t0 + timedelta(minutes=30), t0 + timedelta(minutes=31))
    with sessions.begin() as session:  # the long run ends after the quick one
        finish_run(session, long_run, status="rejected", finished_at=t0 + timedelta(minutes=40))
    assert [r["id"] for r in bot._new_finished_runs()] == [quick, long_run]
    assert bot._new_finished_runs() == []

    # the bot restarts; a run finished while it was down is reported, nothing is repeated
    down = add_run(sessions, "failed", t0 + timedelta(hours=1), t0 + timedelta(hours=2))
    restarted = hooks(sessions, started_at=t0 + timedelta(hours=3))
    assert [r["id"] for r in restarted._new_finished_runs()] == [down]
    assert before_start not in (quick, long_run, down)


def test_messages_carry_the_decision_and_both_losses() -> None:
    run = {
        "id": 7,
        "trigger": "schedule",
        "status": "promoted",
        "started_at": datetime(2024, 6, 1, 4, 0, tzinfo=UTC),
        "decision": "promoted: candidate loss 2.3100 <= current 2.4000 + 0.01",
        "candidate_metrics": {
            "model_dir": "/m/retrain-0007-x",
            "loss": 2.31,
            "perplexity": 10.07,
            "pairs": 812,
            "split": "validation",
        },
        "current_metrics": {"model_dir": "/m/retrain-0005-y", "loss": 2.4, "perplexity": 11.0},
        "error": "bad export(s) left out: x.json: invalid JSON",
    }
    text = format_run(run)
    assert text.startswith("Run #7 (schedule, ")
    assert "candidate: retrain-0007-x · loss 2.3100 · perplexity 10.07 · 812 held-out" in text
    assert "current: retrain-0005-y · loss 2.4000" in text
    assert "error: bad export(s) left out" in text
    assert "loss: candidate 2.3100 vs current 2.4000" in format_run(run, brief=True)

    outcome = {"run_id": 7, **{k: v for k, v in run.items() if k != "id"}}
    assert format_outcome(outcome).startswith("Retraining run #7: promoted\npromoted: candidate")


def test_the_outcome_is_the_last_json_line_of_the_child() -> None:
    out = 'some noise\n{"run_id": 3, "status": "skipped", "decision": "x"}\n'
    assert parse_outcome(out) == {"run_id": 3, "status": "skipped", "decision": "x"}
    assert parse_outcome("Traceback (most recent call last):\n  boom") is None
