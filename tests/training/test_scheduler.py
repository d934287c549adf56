"""The retraining schedule: APScheduler with its job in the project's SQLite database."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from training.errors import InputError
from training.retrain.scheduler import (
    JOB_ID,
    cron_weekdays,
    make_trigger,
    next_run_time,
    start_scheduler,
)
from training.settings import TrainingSettings

FIRES_ENV = "FRIENDBOT_TEST_FIRES"
RECORD = "tests.training.test_scheduler:record_fire"


def record_fire() -> None:
    """The test job: append the time to the file named by FRIENDBOT_TEST_FIRES."""
    with open(os.environ[FIRES_ENV], "a") as f:
        f.write(f"{time.time()}\n")


def fires(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def settings(tmp_path: Path) -> TrainingSettings:
    return TrainingSettings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'friendbot.db'}",
        retrain_cron="0 4 * * *",
        retrain_timezone="Europe/Berlin",
    )


@pytest.fixture
def fire_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fires.txt"
    monkeypatch.setenv(FIRES_ENV, str(path))
    return path


@pytest.fixture
def schedulers() -> Iterator[list]:
    """Schedulers a test starts; all shut down at the end even if it fails."""
    started: list = []
    yield started
    for scheduler in started:
        if scheduler.running:
            scheduler.shutdown(wait=False)


def test_cron_is_read_in_its_time_zone(settings: TrainingSettings) -> None:
    trigger = make_trigger(settings)
    # fake clock: 03:30 local on a summer day -> 04:00 the same day, Berlin time (UTC+2)
    now = datetime(2024, 7, 1, 1, 30, tzinfo=UTC)
    fire = trigger.get_next_fire_time(None, now)
    assert fire.astimezone(UTC) == datetime(2024, 7, 1, 2, 0, tzinfo=UTC)
    # and in winter the same 04:00 local is 03:00 UTC
    fire = trigger.get_next_fire_time(None, datetime(2024, 1, 10, 12, 0, tzinfo=UTC))
    assert fire.astimezone(UTC) == datetime(2024, 1, 11, 3, 0, tzinfo=UTC)


def test_a_bad_cron_expression_is_one_clear_error(settings: TrainingSettings) -> None:
    with pytest.raises(InputError, match="RETRAIN_CRON"):
        make_trigger(settings.model_copy(update={"retrain_cron": "61 4 * * *"}))


def test_a_job_fires_on_a_short_schedule(
    settings: TrainingSettings, fire_log: Path, schedulers: list
) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    trigger = IntervalTrigger(seconds=1, start_date=start)
    scheduler = start_scheduler(settings, trigger=trigger, func=RECORD)
    schedulers.append(scheduler)

    assert wait_until(lambda: fires(fire_log) >= 2), "the job did not fire twice in 10 s"
    scheduler.shutdown(wait=True)
    times = [float(t) for t in fire_log.read_text().split()]
    assert all(b > a for a, b in itertools.pairwise(times))


def test_the_job_survives_a_restart_and_a_missed_run_fires_once(
    settings: TrainingSettings, fire_log: Path, schedulers: list
) -> None:
    first = start_scheduler(settings, func=RECORD)
    schedulers.append(first)
    planned = next_run_time(first)
    assert planned > datetime.now(UTC)
    first.shutdown(wait=True)

    # restart with the same schedule: the stored job is kept, run time and all
    second = start_scheduler(settings, func=RECORD)
    schedulers.append(second)
    assert next_run_time(second) == planned
    # now pretend the process was down for three days across three 04:00 runs
    second.pause()
    second.modify_job(JOB_ID, next_run_time=planned - timedelta(days=3))
    second.shutdown(wait=True)
    assert fires(fire_log) == 0

    third = start_scheduler(settings, func=RECORD)
    schedulers.append(third)
    assert wait_until(lambda: fires(fire_log) >= 1), "the missed run was lost"
    time.sleep(1.0)  # would a second (uncoalesced) run follow?
    assert fires(fire_log) == 1
    assert next_run_time(third) > datetime.now(UTC)


def test_a_changed_schedule_replaces_the_stored_job(
    settings: TrainingSettings, fire_log: Path, schedulers: list
) -> None:
    first = start_scheduler(settings, func=RECORD)
    schedulers.append(first)
    first.shutdown(wait=True)

    hourly = settings.model_copy(update={"retrain_cron": "30 * * * *"})
    second = start_scheduler(hourly, func=RECORD)
    schedulers.append(second)
    fire = next_run_time(second)
    assert fire.minute == 30
    assert fire - datetime.now(UTC) <= timedelta(hours=1)
    assert len(second.get_jobs()) == 1


# --- with the real retraining job ---------------------------------------------------------


def retrain_in_process() -> None:
    """A job that runs retraining in the scheduler's own process (settings from the env)."""
    from training.retrain.pipeline import retrain
    from training.settings import load_settings

    retrain(load_settings(env_file=None), trigger="schedule")


@pytest.fixture
def retrain_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace whose training takes a while (fake_train.py slow) and then fails."""
    from tests.training.retrain_fixtures import export_dict, fake_train_command, write_export

    write_export(tmp_path / "exports" / "crew.json", export_dict(sessions=6))
    values = {
        "EXPORTS_DIR": tmp_path / "exports",
        "MODELS_DIR": tmp_path / "models",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'friendbot.db'}",
        "RETRAIN_WORK_DIR": tmp_path / "work",
        "RETRAIN_TRAIN_COMMAND": fake_train_command("slow", str(tmp_path / "slow.log"), "1.5"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))
    return tmp_path


def training_intervals(log: Path) -> list[tuple[float, float]]:
    events = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    starts = [float(t) for kind, t in events if kind == "start"]
    ends = [float(t) for kind, t in events if kind == "end"]
    return list(zip(sorted(starts), sorted(ends), strict=False))


def test_two_schedulers_on_one_database_never_train_at_once(
    retrain_env: Path, schedulers: list
) -> None:
    from training.settings import load_settings

    settings = load_settings(env_file=None)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    for _ in range(2):  # both fire at the same instants, every second
        trigger = IntervalTrigger(seconds=1, start_date=start)
        schedulers.append(
            start_scheduler(
                settings, trigger=trigger, func="tests.training.test_scheduler:retrain_in_process"
            )
        )
    log = retrain_env / "slow.log"
    # Sharing one job store, the first scheduler to process a due job moves it on, so the
    # other fires only when both looked before either moved it: wait until that happened.
    assert wait_until(
        lambda: len(training_intervals(log)) >= 2 and busy_runs(settings), timeout_s=60
    ), "the second scheduler never met the lock"
    for scheduler in schedulers:
        scheduler.shutdown(wait=True)

    intervals = training_intervals(log)
    for (_, end), (next_start, _) in itertools.pairwise(intervals):
        assert next_start >= end, f"two trainings overlapped: {intervals}"
    runs = all_runs(settings)
    assert all(r.trigger == "schedule" for r in runs)
    assert {r.status for r in runs} <= {"skipped", "failed"}


def all_runs(settings: TrainingSettings) -> list:
    from storage.db import make_engine, session_factory
    from storage.runs import recent_runs

    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            return recent_runs(session, 1000)
    finally:
        engine.dispose()


def busy_runs(settings: TrainingSettings) -> list:
    """Runs that found another one holding the retrain lock."""
    try:
        runs = all_runs(settings)
    except Exception:  # the schema is created by the first run
        return []
    return [r for r in runs if r.status == "skipped" and "in progress" in (r.decision or "")]


def test_the_scheduled_job_runs_retrain_in_a_child_process(retrain_env: Path) -> None:
    from storage.db import make_engine, session_factory
    from storage.runs import last_run
    from training.retrain.scheduler import scheduled_retrain

    status = scheduled_retrain()

    assert status == 1  # the (slow, fake) training fails: `friendbot retrain` exits 1
    with session_factory(make_engine(os.environ["DATABASE_URL"]))() as session:
        run = last_run(session)
    assert (run.trigger, run.status) == ("schedule", "failed")
    assert run.finished_at is not None
    assert "exit status 1" in run.error


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("1", "mon"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0,6", "sun,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("mon-wed", "mon,tue,wed"),
        ("5-7", "sun,fri,sat"),
        ("*", "*"),
    ],
)
def test_cron_weekdays_mean_what_standard_cron_means(field: str, expected: str) -> None:
    assert cron_weekdays(field) == expected


def test_monday_cron_fires_on_a_monday(tmp_path: Path) -> None:
    """APScheduler alone counts 0 as Monday: ``30 3 * * 1`` would have fired on Tuesdays."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    settings = TrainingSettings(retrain_cron="30 3 * * 1", retrain_timezone="UTC")
    trigger = make_trigger(settings)
    sunday = datetime(2026, 11, 29, 12, 0, tzinfo=ZoneInfo("UTC"))
    fire = trigger.get_next_fire_time(None, sunday)
    assert fire is not None and fire.strftime("%A %H:%M") == "Monday 03:30"


@pytest.mark.parametrize("cron", ["30 3 * * 8", "30 3 * * 5-1", "x 3 * * 1", "30 3 * * 1/0"])
def test_bad_cron_is_one_line_naming_the_setting(cron: str) -> None:
    with pytest.raises(InputError, match="RETRAIN_CRON"):
        make_trigger(TrainingSettings(retrain_cron=cron, retrain_timezone="UTC"))
