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
