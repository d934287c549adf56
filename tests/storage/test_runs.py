"""The record of retraining runs."""

from __future__ import annotations

import pytest

from storage.runs import finish_run, last_run, recent_runs, start_run, update_run


def test_a_run_from_start_to_decision(Session) -> None:
    with Session.begin() as session:
        run = start_run(session, "manual")
        run_id = run.id
        assert run_id is not None and run.status == "running" and run.finished_at is None
    with Session.begin() as session:
        update_run(session, run_id, inputs_fingerprint="abc123")
        finish_run(
            session,
            run_id,
            status="promoted",
            candidate_dir="models/m2",
            previous_dir="models/m1",
            candidate_metrics={"loss": 1.5, "rouge_l": 0.2},
            current_metrics={"loss": 1.7},
            decision="candidate loss 1.50 <= current 1.70 + 0.02",
        )
    with Session() as session:
        run = last_run(session)
    assert run.status == "promoted" and run.trigger == "manual"
    assert run.finished_at is not None and run.finished_at >= run.started_at
    assert run.inputs_fingerprint == "abc123"
    assert run.candidate_metrics == {"loss": 1.5, "rouge_l": 0.2}
    assert "promoted" in repr(run)


def test_recent_and_last_runs_newest_first(Session) -> None:
    with Session.begin() as session:
        ids = [start_run(session, trigger).id for trigger in ("cli", "schedule", "schedule")]
        finish_run(session, ids[0], status="promoted")
        finish_run(session, ids[1], status="failed", error="Traceback ...")
    with Session() as session:
        assert [r.id for r in recent_runs(session)] == ids[::-1]
        assert [r.id for r in recent_runs(session, limit=2)] == ids[:0:-1]
        assert last_run(session).status == "running"
        assert last_run(session, "promoted").id == ids[0]
        assert last_run(session, "rejected") is None


def test_bad_arguments_are_refused(Session) -> None:
    with Session.begin() as session:
        with pytest.raises(ValueError, match="trigger"):
            start_run(session, "cron")
        run_id = start_run(session, "cli").id
        with pytest.raises(ValueError, match="status"):
            finish_run(session, run_id, status="running")
        with pytest.raises(TypeError, match="candidate_metric"):
            finish_run(session, run_id, status="failed", candidate_metric={})
        with pytest.raises(LookupError):
            finish_run(session, run_id + 100, status="failed")
