"""The retraining gate never judges a candidate against a broken served model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.training.retrain_fixtures import export_dict, fake_train_command, write_export
from tests.training.test_retrain import make_workspace
from training.errors import InputError
from training.model.model_dir import resolve_current, resolve_previous, rollback, set_current
from training.retrain import models_folder


def test_a_broken_served_model_counts_as_none_and_a_valid_candidate_replaces_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    ws = make_workspace(
        tmp_path,
        retrain_train_command=fake_train_command("copy", str(tiny_model_dir)),
        retrain_from="current",
    )
    write_export(ws.exports / "crew.json", export_dict())
    broken = Path(shutil.copytree(tiny_model_dir, ws.models / "hand-trained"))
    (broken / "tokenizer.json").unlink()  # loads with a 4-token vocabulary: a meaningless loss
    set_current(ws.models, broken)

    outcome = ws.run()

    # before: the broken model's (lower) loss won and it stayed in service
    assert outcome.status == "promoted", outcome
    assert "the served model is not usable" in outcome.decision
    assert "no tokenizer vocabulary" in outcome.decision
    assert resolve_current(ws.models) == Path(outcome.candidate_dir).resolve()
    assert resolve_previous(ws.models) == broken.resolve()
    record = ws.record(outcome.run_id)
    assert record.current_metrics["model_dir"] == str(broken.resolve())
    assert "no tokenizer vocabulary" in record.current_metrics["unusable"]
    assert "loss" not in record.current_metrics
    # RETRAIN_FROM=current does not continue from a broken model: the base model is used
    log = (ws.root / "work" / "logs" / f"run-{outcome.run_id}.log").read_text()
    assert "--base-model tiny" in log and f"--base-model {broken}" not in log
    # and rolling back to it is refused, leaving the valid model in service
    with pytest.raises(InputError, match="no tokenizer vocabulary"):
        rollback(ws.models)
    assert resolve_current(ws.models) == Path(outcome.candidate_dir).resolve()


def test_a_broken_candidate_fails_the_run_and_the_served_model_stays(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    source = Path(shutil.copytree(tiny_model_dir, tmp_path / "no-info"))
    (source / "friendbot.json").unlink()
    ws = make_workspace(tmp_path, retrain_train_command=fake_train_command("copy", str(source)))
    write_export(ws.exports / "crew.json", export_dict())
    serving = Path(shutil.copytree(tiny_model_dir, ws.models / "hand-trained"))
    set_current(ws.models, serving)

    outcome = ws.run()

    assert outcome.status == "failed", outcome
    assert "no friendbot.json" in outcome.error
    assert resolve_current(ws.models) == serving.resolve()
    assert models_folder.candidates(ws.models) == []  # the bad candidate is gone


def _judge_served(ws: object, model_dir: Path, real: int, bot: int) -> None:
    """One revealed /guess round of ``model_dir``'s bot lines with these votes."""
    from datetime import UTC, datetime

    from storage.db import make_engine, session_factory, upgrade
    from storage.history import upsert_chat
    from storage.judge import add_vote, close_round, start_round

    engine = make_engine(ws.settings.database_url)  # type: ignore[attr-defined]
    upgrade(engine)
    with session_factory(engine).begin() as session:
        upsert_chat(session, -1001, "Friends", "supergroup")
        row = start_round(
            session, chat_id=-1001, model_id=str(model_dir.resolve()), friend="Ann",
            friend_id=1, is_bot=True, seed=1, excerpt_ids=[1, 2], real_message_id=3,
            votes_needed=real + bot, deadline_at=datetime.now(UTC),
        )  # fmt: skip
        for voter in range(real + bot):
            add_vote(session, row.id, voter, guess_real=voter < real)
        close_round(session, row.id)
    engine.dispose()


def test_the_fool_rate_gate_waits_for_votes_then_records_the_verdict(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = make_workspace(
        tmp_path,
        retrain_train_command=fake_train_command("copy", str(tiny_model_dir)),
        retrain_fool_gate_votes=4,
        retrain_tolerance=1.0,
    )
    write_export(ws.exports / "crew.json", export_dict())
    serving = Path(shutil.copytree(tiny_model_dir, ws.models / "hand-trained"))
    set_current(ws.models, serving)
    _judge_served(ws, serving, real=2, bot=1)  # 3 votes: not judged enough yet

    waiting = ws.run()
    assert waiting.status == "skipped", waiting
    assert "3 of the 4 /guess votes" in waiting.decision
    assert resolve_current(ws.models) == serving.resolve()
    assert models_folder.candidates(ws.models) == []  # nothing was trained
    assert ws.record(waiting.run_id).current_metrics["judged"]["fool_rate"]["votes"] == 3

    _judge_served(ws, serving, real=1, bot=0)  # the 4th vote
    outcome = ws.run()
    assert outcome.status == "promoted", outcome
    judged = ws.record(outcome.run_id).current_metrics["judged"]
    assert (judged["fool_rate"]["real"], judged["fool_rate"]["votes"]) == (3, 4)

    from bot.retrain_hooks import format_outcome

    text = format_outcome(outcome.to_dict())
    assert "/guess on hand-trained: fool rate 75% (95% CI" in text

    # `friendbot runs` shows the verdict on the model now in service (the candidate: none yet)
    from tests.cli_runner import friendbot

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", ws.settings.database_url)
    monkeypatch.setenv("MODELS_DIR", str(ws.models))
    monkeypatch.setenv("COLUMNS", "200")
    code, shown = friendbot("runs")
    assert code == 0, shown
    assert "/guess:   no round revealed yet" in shown
    _judge_served(ws, Path(outcome.candidate_dir), real=1, bot=1)
    code, shown = friendbot("runs")
    assert "/guess:   fool rate 50% (95% CI 9%-91%, 2 votes)" in shown, shown
