"""`friendbot retrain`, `runs`, `rollback` and `schedule --show` as an admin types them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_runner import friendbot
from tests.training.retrain_fixtures import export_dict, fake_train_command, write_export
from training.model.model_dir import resolve_current
from training.retrain.models_folder import resolve_previous


@pytest.fixture
def env(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings through the environment, as the commands (and their children) read them."""
    values = {
        "EXPORTS_DIR": tmp_path / "exports",
        "MODELS_DIR": tmp_path / "models",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'friendbot.db'}",
        "RETRAIN_WORK_DIR": tmp_path / "work",
        "RETRAIN_TRAIN_COMMAND": fake_train_command("copy", str(tiny_model_dir)),
        "RETRAIN_EXPORT_CT2": "never",
        "RETRAIN_CRON": "15 3 * * 2",
        "RETRAIN_TIMEZONE": "UTC",
        "COLUMNS": "200",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tmp_path)  # no stray .env from the repository
    write_export(tmp_path / "exports" / "crew.json", export_dict())
    return tmp_path


def test_retrain_runs_and_rollback(env: Path) -> None:
    code, out = friendbot("retrain", "--json")
    assert code == 0, out
    first = json.loads(out.strip().splitlines()[-1])
    assert first["status"] == "promoted" and first["run_id"] == 1

    code, out = friendbot("retrain")
    assert code == 0 and "skipped" in out and "unchanged since run #1" in out
    code, out = friendbot("retrain", "--force")
    assert code == 0 and "run #3: promoted" in out

    code, out = friendbot("runs")
    assert code == 0
    for expected in ("Retraining runs", "promoted", "skipped", "cli", "serving:", "previous:"):
        assert expected in out
    code, out = friendbot("runs", "--json", "--limit", "2")
    runs = json.loads(out)
    assert [r["id"] for r in runs] == [3, 2]
    assert runs[0]["candidate_metrics"]["loss"] > 0
    code, out = friendbot("runs", "--run", "1")
    assert json.loads(out)["decision"].startswith("promoted: no model was in service")
    code, out = friendbot("runs", "--run", "99")
    assert code == 2 and "no such training run" in out

    models = env / "models"
    third, first_dir = resolve_current(models), Path(first["candidate_dir"]).resolve()
    assert resolve_previous(models) != third
    code, out = friendbot("rollback")
    assert code == 0 and f"now serving {first_dir}" in out
    assert (resolve_current(models), resolve_previous(models)) == (first_dir, third)
    code, _ = friendbot("rollback")  # twice: forward again
    assert (resolve_current(models), resolve_previous(models)) == (third, first_dir)
    code, _ = friendbot("rollback", str(first_dir))
    assert code == 0 and resolve_current(models) == first_dir
    code, out = friendbot("rollback", str(first_dir))
    assert code == 2 and "already the model in service" in out


def test_rollback_with_nothing_to_go_back_to_is_one_line(env: Path) -> None:
    code, out = friendbot("rollback")
    assert code == 2
    assert out.strip().count("\n") == 0 and "no previous model to roll back to" in out


def test_a_failed_run_exits_1_and_a_bad_setting_exits_2(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRAIN_TRAIN_COMMAND", fake_train_command("crash"))
    code, out = friendbot("retrain")
    assert code == 1 and "failed" in out and "exit status 3" in out

    monkeypatch.setenv("RETRAIN_TOLERANCE", "-1")
    code, out = friendbot("retrain")
    assert code == 2 and "RETRAIN_TOLERANCE" in out


def test_schedule_show_prints_the_next_run(env: Path) -> None:
    code, out = friendbot("schedule", "--show")
    assert code == 0
    assert "15 3 * * 2" in out and "03:15:00+00:00" in out
    assert "no job yet" in out


def start_slow_retrain(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[subprocess.Popen[bytes], Path]:
    """`python -m training.cli retrain` with a slow fake trainer, once its training started."""
    log = env / "slow.log"
    monkeypatch.setenv("RETRAIN_TRAIN_COMMAND", fake_train_command("slow", str(log), "60"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "retrain"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (log.exists() and "start" in log.read_text()):
        if time.monotonic() >= deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("training never started" if proc.poll() is None else "retrain exited early")
        time.sleep(0.1)
    return proc, log


def test_a_stopped_retrain_records_why_and_stops_its_training(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (a bot shutting down, systemd stopping a service) during training."""
    import signal
    import time

    proc, log = start_slow_retrain(env, monkeypatch)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()

    _, out = friendbot("runs", "--run", "1")
    run = json.loads(out)
    assert run["status"] == "failed"
    assert run["error"].startswith("interrupted")
    time.sleep(0.5)
    assert "end" not in log.read_text()  # the training child was stopped too, not orphaned
    monkeypatch.setenv("RETRAIN_TRAIN_COMMAND", fake_train_command("crash"))
    _, out = friendbot("retrain")  # the lock was released: a new run goes ahead
    assert "run #2: failed" in out and "exit status 3" in out


def _pid_alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, only not reaped yet
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_killed_retrain_takes_its_training_along_and_shows_as_interrupted(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL (the OOM killer, kill -9): nothing in the retrain process runs any more."""
    import time

    proc, log = start_slow_retrain(env, monkeypatch)
    try:
        child = int(log.read_text().split("pid ", 1)[1].split()[0])
        code, out = friendbot("runs", "--run", "1")
        assert json.loads(out)["status"] == "running"  # alive: shown as it is

        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _pid_alive(child):
            assert time.monotonic() < deadline, "the training child outlived its retrain"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()

    code, out = friendbot("runs", "--run", "1")
    run = json.loads(out)
    assert run["status"] == "interrupted" and "is gone" in run["error"]
    code, out = friendbot("runs")
    assert code == 0 and "interrupted" in out and "running" not in out
    # showing it wrote nothing: the record is closed by the next retrain, not by `runs`
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{env / 'friendbot.db'}")
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT status FROM training_runs")).scalars().all()
    engine.dispose()
    assert stored == ["running"]
    monkeypatch.setenv("RETRAIN_TRAIN_COMMAND", fake_train_command("crash"))
    friendbot("retrain")
    _, out = friendbot("runs", "--run", "1")
    assert json.loads(out)["status"] == "failed"


def test_a_refused_rollback_creates_nothing(tmp_path: Path) -> None:
    """In a fresh folder, the installed `friendbot rollback` says why and leaves it empty."""
    import os
    import subprocess
    import sys

    script = Path(sys.executable).with_name("friendbot")
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_DIR", "_URL"))}
    done = subprocess.run(
        [str(script), "rollback"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "no previous model to roll back to" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no data/, no database
