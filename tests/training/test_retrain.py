"""One retraining run (training.retrain.pipeline) on the tiny model: promote, skip, reject, fail.

Training runs in a child process, so the cases that need a particular candidate (a crash, a
kill, a copy of a known model) point RETRAIN_TRAIN_COMMAND at tests/training/fake_train.py;
the cases about real training run the real ``friendbot train`` with a few steps.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, session_factory, upgrade
from storage.history import add_message, set_opted_out, upsert_chat, upsert_member
from storage.locks import current_holder, release, try_acquire
from storage.models import TrainingRun
from storage.runs import start_run, update_run
from tests.training.retrain_fixtures import (
    export_dict,
    fake_train_command,
    newest_date,
    write_export,
)
from training.model.model_dir import resolve_current, set_current
from training.retrain import models_folder
from training.retrain.pipeline import LOCK_NAME, RunOutcome, retrain
from training.settings import TrainingSettings

CHAT_ID = -1_001_712_345_678  # Bot API form of export_dict's chat


@dataclass
class Workspace:
    root: Path
    settings: TrainingSettings

    @property
    def exports(self) -> Path:
        return Path(self.settings.exports_dir)

    @property
    def models(self) -> Path:
        return Path(self.settings.models_dir)

    def with_settings(self, **changes: object) -> Workspace:
        return Workspace(self.root, self.settings.model_copy(update=changes))

    def run(self, *, force: bool = False) -> RunOutcome:
        self.reports: list[str] = []
        return retrain(self.settings, force=force, report=self.reports.append)

    def sessions(self) -> sessionmaker[Session]:
        engine = make_engine(self.settings.database_url)
        upgrade(engine)
        return session_factory(engine)

    def record(self, run_id: int) -> TrainingRun:
        with self.sessions()() as session:
            return session.get(TrainingRun, run_id)

    def locks_held(self) -> str | None:
        return current_holder(self.sessions(), LOCK_NAME)


def make_workspace(root: Path, **settings: object) -> Workspace:
    values: dict[str, object] = {
        "exports_dir": root / "exports",
        "models_dir": root / "models",
        "database_url": f"sqlite:///{root / 'friendbot.db'}",
        "retrain_work_dir": root / "work",
        "retrain_tolerance": 0.0,
        "retrain_export_ct2": "never",
        "retrain_prepare_options": {"context": 3},  # short inputs: quick evaluations
    }
    values.update(settings)
    (root / "exports").mkdir(parents=True, exist_ok=True)
    return Workspace(root, TrainingSettings(_env_file=None, **values))


@pytest.fixture
def ws(tmp_path: Path, tiny_model_dir: Path) -> Workspace:
    """A workspace with one export whose 'training' copies the untrained tiny model."""
    workspace = make_workspace(
        tmp_path, retrain_train_command=fake_train_command("copy", str(tiny_model_dir))
    )
    write_export(workspace.exports / "crew.json", export_dict())
    return workspace


@pytest.fixture(scope="module")
def worse_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model with its output layer scaled up: confidently wrong, a worse candidate."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    out = tmp_path_factory.mktemp("worse-model")
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    shutil.copy(tiny_model_dir / "friendbot.json", out)  # a chat model, as training writes it
    return out


# --- promote, skip ---------------------------------------------------------------------------


def test_first_run_trains_in_a_child_and_promotes(ws: Workspace) -> None:
    outcome = ws.run()

    assert outcome.status == "promoted", outcome
    assert "no model was in service" in outcome.decision
    served = resolve_current(ws.models)
    assert served == Path(outcome.candidate_dir).resolve()
    assert (served / "config.json").is_file()
    record = ws.record(outcome.run_id)
    assert (record.status, record.trigger) == ("promoted", "cli")
    assert record.finished_at is not None and record.inputs_fingerprint
    assert record.candidate_metrics["loss"] == pytest.approx(outcome.candidate_metrics["loss"])
    assert record.candidate_metrics["split"] == "validation"
    assert record.candidate_metrics["pairs"] > 0
    assert record.candidate_metrics["train_pairs"] > record.candidate_metrics["pairs"]
    assert record.current_metrics is None
    # the child's output went to the run's log; the scratch dataset is gone; lock released
    log = ws.root / "work" / "logs" / f"run-{outcome.run_id}.log"
    assert "fake_train: copied" in log.read_text()
    assert not (ws.root / "work" / f"run-{outcome.run_id}").exists()
    assert ws.locks_held() is None


def test_unchanged_inputs_are_skipped_even_renamed(ws: Workspace) -> None:
    first = ws.run()
    assert first.status == "promoted"
    (ws.exports / "crew.json").rename(ws.exports / "crew-renamed.json")

    second = ws.run()

    assert second.status == "skipped"
    assert f"unchanged since run #{first.run_id}" in second.decision
    assert ws.record(second.run_id).inputs_fingerprint == ws.record(first.run_id).inputs_fingerprint
    assert resolve_current(ws.models) == Path(first.candidate_dir).resolve()
    assert len(models_folder.candidates(ws.models)) == 1


def test_force_and_changed_options_train_again(ws: Workspace) -> None:
    assert ws.run().status == "promoted"
    assert ws.run(force=True).status == "promoted"
    changed = ws.with_settings(retrain_prepare_options={"context": 3, "session_gap": 90})
    assert changed.run().status == "promoted"
    assert changed.run().status == "skipped"


def test_a_new_export_is_promoted_and_the_old_model_kept_as_previous(ws: Workspace) -> None:
    first = ws.run()
    old = export_dict()
    write_export(
        ws.exports / "crew-june.json",
        export_dict(start=newest_date(old) + 86_400, first_id=10_000, seed=1),
    )

    second = ws.run()

    assert second.status == "promoted", second
    # the same (copied) model scores the same on the same sessions: within tolerance 0
    assert second.candidate_metrics["loss"] == pytest.approx(second.current_metrics["loss"])
    assert second.candidate_metrics["exports"] == ["crew-june.json", "crew.json"]
    assert resolve_current(ws.models) == Path(second.candidate_dir).resolve()
    assert models_folder.resolve_previous(ws.models) == Path(first.candidate_dir).resolve()
    assert ws.record(second.run_id).previous_dir == str(Path(first.candidate_dir).resolve())


def test_old_models_are_pruned_beyond_keep_models(ws: Workspace) -> None:
    ws = ws.with_settings(keep_models=2)
    outcomes = [ws.run(force=True) for _ in range(3)]
    assert [o.status for o in outcomes] == ["promoted"] * 3
    left = models_folder.candidates(ws.models)
    assert [p.name for p in left] == [Path(o.candidate_dir).name for o in outcomes[1:]]


# --- reject -------------------------------------------------------------------------------


def test_a_worse_candidate_is_rejected_and_the_old_model_still_serves(
    ws: Workspace, tiny_model_dir: Path, worse_model_dir: Path
) -> None:
    serving = shutil.copytree(tiny_model_dir, ws.models / "hand-trained")
    set_current(ws.models, serving)
    ws = ws.with_settings(retrain_train_command=fake_train_command("copy", str(worse_model_dir)))

    outcome = ws.run()

    assert outcome.status == "rejected", outcome
    assert outcome.candidate_metrics["loss"] > outcome.current_metrics["loss"]
    assert "served model is unchanged" in outcome.decision
    assert resolve_current(ws.models) == serving.resolve()
    assert not Path(outcome.candidate_dir).exists()  # rejected candidates are deleted
    record = ws.record(outcome.run_id)
    assert record.status == "rejected"
    assert record.current_metrics["model_dir"] == str(serving.resolve())
    # both were judged on the same held-out pairs
    assert record.current_metrics["pairs"] == record.candidate_metrics["pairs"]
    # a rejection is a decision: the same inputs are not tried again
    assert ws.run().status == "skipped"


# --- fail ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "why"),
    [("crash", "exit status 3"), ("kill", "killed by signal 9")],
)
def test_a_training_crash_fails_the_run_and_changes_nothing(
    ws: Workspace, mode: str, why: str
) -> None:
    first = ws.run()
    write_export(ws.exports / "new.json", export_dict(seed=5, first_id=5000))
    broken = ws.with_settings(retrain_train_command=fake_train_command(mode))

    outcome = broken.run()

    assert outcome.status == "failed"
    assert why in outcome.error
    if mode == "crash":
        assert "CUDA out of memory (fake)" in outcome.error  # the child's last words
    record = ws.record(outcome.run_id)
    assert (record.status, record.error) == ("failed", outcome.error)
    assert "unchanged" in record.decision and record.finished_at is not None
    assert resolve_current(ws.models) == Path(first.candidate_dir).resolve()
    assert models_folder.candidates(ws.models) == [Path(first.candidate_dir)]
    assert ws.locks_held() is None
    # a failure is not a decision: the next run tries again
    assert ws.run().status == "promoted"


def test_a_training_that_runs_too_long_is_stopped(ws: Workspace) -> None:
    slow = ws.with_settings(
        retrain_train_command=fake_train_command("slow", str(ws.root / "slow.log"), "30"),
        retrain_train_timeout_s=1,
    )
    outcome = slow.run()
    assert outcome.status == "failed"
    assert "timed out after 1 s" in outcome.error
    assert "end" not in (ws.root / "slow.log").read_text()  # killed, not waited for
    assert ws.locks_held() is None


def test_an_interrupted_run_is_recorded_and_its_stale_lock_taken_over(ws: Workspace) -> None:
    """A retrain process died mid-run (kill -9): its lock and 'running' row stay behind."""
    sessions = ws.sessions()
    dead = f"{socket.gethostname()}:{2**22 + 12345}:deadbeef"  # no such pid
    assert try_acquire(sessions, LOCK_NAME, dead, stale_after_s=3600)
    with sessions.begin() as session:
        ghost = start_run(session, "schedule").id
        leftover = ws.models / "retrain-0001-20240101T000000"
        leftover.mkdir(parents=True)
        update_run(session, ghost, candidate_dir=str(leftover))

    outcome = ws.run()

    assert outcome.status == "promoted"
    record = ws.record(ghost)
    assert record.status == "failed" and "interrupted" in record.error
    assert not leftover.exists()  # its half-written candidate is cleaned up
    assert ws.locks_held() is None


def test_a_run_while_another_holds_the_lock_is_recorded_as_skipped(ws: Workspace) -> None:
    sessions = ws.sessions()
    alive = f"{socket.gethostname()}:1:otherprocess"  # pid 1 always exists
    assert try_acquire(sessions, LOCK_NAME, alive, stale_after_s=3600)
    try:
        outcome = ws.run()
    finally:
        release(sessions, LOCK_NAME, alive)
    assert outcome.status == "skipped"
    assert "another retraining run is in progress" in outcome.decision
    assert resolve_current(ws.models) is None


# --- bad exports ----------------------------------------------------------------------------


def test_a_bad_export_is_left_out_and_named_in_the_run(ws: Workspace) -> None:
    good = (ws.exports / "crew.json").read_bytes()
    (ws.exports / "cut-off.json").write_bytes(good[: len(good) // 2])
    (ws.exports / "notes.json").write_text('{"todo": ["buy milk"]}')

    outcome = ws.run()

    assert outcome.status == "promoted"  # trained on the good export
    assert outcome.candidate_metrics["exports"] == ["crew.json"]
    record = ws.record(outcome.run_id)
    assert "cut-off.json: invalid JSON at line" in record.error
    assert "notes.json: not a Telegram Desktop export" in record.error
    # unchanged (good) inputs: skipped, but the bad files are still reported
    again = ws.run()
    assert again.status == "skipped" and "cut-off.json" in again.error


def test_only_bad_exports_fail_the_run_cleanly(ws: Workspace) -> None:
    (ws.exports / "crew.json").write_text('{"name": "x", "messages": [')
    outcome = ws.run()
    assert outcome.status == "failed"
    assert outcome.error.startswith("no usable export: ")
    assert "crew.json" in outcome.error
    assert resolve_current(ws.models) is None
    assert ws.locks_held() is None


def test_an_empty_exports_folder_is_a_clear_failure(ws: Workspace) -> None:
    (ws.exports / "crew.json").unlink()
    outcome = ws.run()
    assert outcome.status == "failed"
    assert "no Telegram export (*.json) to train on" in outcome.error


def test_a_bad_prepare_option_is_a_clear_failure(ws: Workspace) -> None:
    outcome = ws.with_settings(retrain_prepare_options={"sesion_gap": 5}).run()
    assert outcome.status == "failed"
    assert "RETRAIN_PREPARE_OPTIONS: unknown option(s) sesion_gap" in outcome.error


# --- the bot's stored history ---------------------------------------------------------------


def test_stored_history_after_the_export_is_trained_on(ws: Workspace) -> None:
    ws = ws.with_settings(retrain_include_bot_history=True)
    export = export_dict()
    after = datetime.fromtimestamp(newest_date(export), UTC) + timedelta(hours=1)
    sessions = ws.sessions()

    def store(message_id: int, user_id: int, name: str, text: str, when: datetime) -> None:
        with sessions.begin() as session:
            upsert_chat(session, CHAT_ID, "Test Crew", "supergroup")
            upsert_member(session, user_id, name)
            add_message(
                session,
                chat_id=CHAT_ID,
                message_id=message_id,
                sender_id=user_id,
                sender_name=name,
                text=text,
                date=when,
            )

    store(1, 1001, "Alice", "already in the export", after - timedelta(days=400))
    first = ws.run()
    assert first.status == "promoted"
    assert first.candidate_metrics["history_messages"] == 0  # older than the export's end

    store(90_001, 1001, "Alice", "lol new stuff 😂", after)
    store(90_002, 1002, "Bob", "ok fine, new stuff.", after + timedelta(minutes=1))
    store(90_003, 1066, "Olga", "please forget me", after + timedelta(minutes=2))
    with sessions.begin() as session:
        set_opted_out(session, 1066, True)

    second = ws.run()

    assert second.status == "promoted", second  # new stored messages changed the inputs
    assert second.candidate_metrics["history_messages"] == 2  # not Olga's
    assert ws.run().status == "skipped"
    with sessions() as session:
        fingerprints = session.scalars(select(TrainingRun.inputs_fingerprint)).all()
    assert len(set(fingerprints)) == 2


# --- a run's process and its training child -----------------------------------------------------


def test_a_running_run_whose_process_is_gone_shows_as_interrupted(ws: Workspace) -> None:
    from training.retrain.pipeline import run_record

    host = socket.gethostname()
    owners = {
        "dead": f"{host}:{2**22 + 12345}:deadbeef",  # no such pid on this host
        "alive": f"{host}:1:init",  # pid 1 always exists
        "elsewhere": f"not-{host}:{2**22 + 12345}:remote",  # cannot tell: shown as stored
        "unknown": None,  # recorded before runs had owners
    }
    with ws.sessions().begin() as session:
        ids = {name: start_run(session, "cli", owner=owner).id for name, owner in owners.items()}
    records = {name: run_record(ws.record(run_id)) for name, run_id in ids.items()}
    assert records["dead"]["status"] == "interrupted"
    assert f"({host}, pid {2**22 + 12345}) is gone" in records["dead"]["error"]
    assert {records[n]["status"] for n in ("alive", "elsewhere", "unknown")} == {"running"}
    assert ws.record(ids["dead"]).status == "running"  # shown, not rewritten


def test_a_run_records_the_process_that_owns_it(ws: Workspace) -> None:
    import os

    outcome = ws.run()
    owner = ws.record(outcome.run_id).owner
    assert owner.split(":")[:2] == [socket.gethostname(), str(os.getpid())]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_the_training_childs_own_children_die_with_the_retrain(tmp_path: Path) -> None:
    """A launcher's workers (torchrun) share the child's group: the guard stops them all."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    script = (
        "import sys; from pathlib import Path; from training.retrain.children import run_child;"
        "run_child(['sh', '-c', 'sleep 60 & echo $! > ' + sys.argv[1] + '; wait'],"
        " Path(sys.argv[2]), None, False)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script, str(pid_file), str(tmp_path / "l")])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{worker}").exists() and "Z" not in _state(worker):
            assert time.monotonic() < deadline, "the child's own child outlived the retrain"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_a_channel_export_is_left_out_unless_single_speakers_are_allowed(ws: Workspace) -> None:
    channel = export_dict(speakers={"Daily News": ["breaking: {t}"]}, name="Daily News",
                          chat_id=777, sessions=4)  # fmt: skip
    channel["type"] = "public_channel"
    for message in channel["messages"]:
        message["from_id"] = "channel777"
    write_export(ws.exports / "news.json", channel)

    outcome = ws.run()
    assert outcome.status == "promoted"  # trained on the group alone
    assert outcome.candidate_metrics["exports"] == ["crew.json"]
    assert "news.json: 1 speaker(s) in chat Daily News (public_channel)" in outcome.error
    assert '"allow_single_speaker": true' in outcome.error

    allowed = ws.with_settings(
        retrain_prepare_options={"context": 3, "allow_single_speaker": True}
    ).run()
    assert allowed.error is None
    assert sorted(allowed.candidate_metrics["exports"]) == ["crew.json", "news.json"]
