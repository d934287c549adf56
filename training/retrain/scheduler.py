"""Retraining on a schedule: APScheduler 3 with its job kept in the project's database.

The job store is the project's own database (``DATABASE_URL``), so the schedule survives a
restart: the stored job keeps its next run time, and a run missed while nothing was running
starts once when the scheduler comes back (``coalesce=True``: several missed runs are one).
Restarting with an unchanged ``RETRAIN_CRON`` keeps the stored job as it is; ``add_job(...,
replace_existing=True)`` alone would recompute the next run time from *now* and so silently
drop a missed run. A changed schedule replaces the job.

Each firing runs ``friendbot retrain --trigger schedule`` in a child process: training,
evaluation and their memory stay out of the scheduler (or bot) process, and a crash there
is recorded as a failed run, not lost with the scheduler. Two schedulers on one database
(two hosts, or ``friendbot schedule`` next to ``RETRAIN_IN_BOT``) share the stored job: the
first to process it when due moves it on, so usually only one fires; when both read it due
before either moved it, both fire, and the retrain lock lets one train and records the other
as skipped.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from training.errors import InputError
from training.settings import TrainingSettings

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.base import BaseTrigger

log = logging.getLogger(__name__)

JOB_ID = "friendbot-retrain"
JOB_TABLE = "apscheduler_jobs"

_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()


def scheduled_retrain(trigger: str = "schedule") -> int:
    """The scheduled job: one ``friendbot retrain`` in a child process; returns its status."""
    return run_retrain_child(["--trigger", trigger])[0]


def run_retrain_child(args: list[str], *, capture: bool = False) -> tuple[int, str]:
    """Run ``friendbot retrain ARGS`` as a child of this process and wait for it.

    Returns (exit status, its stdout if ``capture`` else ""). The child inherits the
    environment, hence the same settings. It is tracked so that :func:`stop_children` can
    stop it (it then records its run as interrupted) when this process shuts down.
    """
    argv = [sys.executable, "-m", "training.cli", "retrain", *args]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if capture else None
    )
    with _children_lock:
        _children.add(proc)
    try:
        out, _ = proc.communicate()
        return proc.returncode, (out or b"").decode("utf-8", "replace")
    finally:
        with _children_lock:
            _children.discard(proc)


def stop_children(timeout_s: float = 30.0) -> None:
    """Ask running retrain children to stop (SIGTERM), then kill those that do not."""
    with _children_lock:
        procs = list(_children)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()


def make_trigger(settings: TrainingSettings) -> BaseTrigger:
    """``RETRAIN_CRON`` in ``RETRAIN_TIMEZONE``; a bad expression is one clear error."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        fields = settings.retrain_cron.split()
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
        minute, hour, day, month, weekday = fields
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=cron_weekdays(weekday),
            timezone=settings.timezone(),
        )
    except ValueError as exc:
        raise InputError(f"RETRAIN_CRON: {settings.retrain_cron!r}: {exc}") from exc


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_weekdays(field: str) -> str:
    """Standard cron's weekday field (0 or 7 = Sunday) in APScheduler's words.

    APScheduler 3 numbers weekdays from Monday = 0, and ``CronTrigger.from_crontab`` passes
    the numbers through unchanged, so ``30 3 * * 1`` would run on Tuesdays. Spelling the days
    out as names ("mon,wed") means the same to both.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"weekday step {step_text!r} must be at least 1")
        if span == "*":
            first, last = 0, 6
        else:
            low, _, high = span.partition("-")
            first = _weekday_number(low)
            last = _weekday_number(high) if high else (6 if step_text else first)
        if last < first:
            raise ValueError(f"weekday range {span!r} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def _weekday_number(text: str) -> int:
    if text[:3] in _WEEKDAYS:
        return _WEEKDAYS.index(text[:3])
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"weekday {text!r} is not 0-7 or a day name")


def _scheduler_class() -> type[BackgroundScheduler]:
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_RUNNING

    class RetrainScheduler(BackgroundScheduler):
        """APScheduler 3's background scheduler, minus one way to lose a run.

        Its loop processes due jobs once more while ``shutdown()`` runs (the state is then
        "stopped", not "paused"); a job due at that moment cannot be submitted to the
        already-stopped executor, yet its next run time is advanced in the store, so the run
        is lost. Processing only while running leaves it due for the next start instead.
        """

        def _process_jobs(self) -> float | None:
            if self.state != STATE_RUNNING:
                return None
            return super()._process_jobs()

    return RetrainScheduler


def build_scheduler(settings: TrainingSettings) -> BackgroundScheduler:
    """A background scheduler whose jobs live in the project's database.

    One worker thread and ``max_instances=1``: within one scheduler a run never overlaps
    the previous one; across schedulers the retrain lock takes over.
    """
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    from storage.db import make_engine

    store = SQLAlchemyJobStore(engine=make_engine(settings.database_url), tablename=JOB_TABLE)
    return _scheduler_class()(
        jobstores={"default": store},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.retrain_misfire_grace_s,
        },
        timezone=settings.timezone(),
    )


def _same_job(job: Any, func_ref: str, trigger: BaseTrigger, grace: int | None) -> bool:
    """Whether the stored job is the one we would add (then it is kept, run time and all)."""
    return (
        job.func_ref == func_ref
        and repr(job.trigger) == repr(trigger)
        and job.misfire_grace_time == grace
    )


def start_scheduler(
    settings: TrainingSettings,
    *,
    trigger: BaseTrigger | None = None,
    func: str | Callable[..., Any] = "training.retrain.scheduler:scheduled_retrain",
) -> BackgroundScheduler:
    """Start the retraining schedule (the bot and ``friendbot schedule`` both call this).

    The scheduler starts paused so the stored job can be inspected before anything runs:
    kept when unchanged (a run missed while we were down still fires, once), replaced when
    the schedule changed. ``trigger`` and ``func`` are for tests (a one-second interval, a
    job that only records that it ran); the function must be importable by name, as the
    job store keeps a reference, not the function.
    """
    from apscheduler.util import obj_to_ref

    trigger = trigger or make_trigger(settings)
    func_ref = func if isinstance(func, str) else obj_to_ref(func)
    grace = settings.retrain_misfire_grace_s
    scheduler = build_scheduler(settings)
    scheduler.start(paused=True)
    job = scheduler.get_job(JOB_ID)
    if job is not None and _same_job(job, func_ref, trigger, grace):
        log.info("retraining schedule kept from the job store: next run %s", job.next_run_time)
    else:
        job = scheduler.add_job(
            func_ref,
            trigger,
            id=JOB_ID,
            name="retrain",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=grace,
        )
        log.info("retraining scheduled (%s): next run %s", trigger, job.next_run_time)
    scheduler.resume()
    return scheduler


def next_run_time(scheduler: BackgroundScheduler) -> Any:
    """When the retraining job fires next (None if it has no future run)."""
    job = scheduler.get_job(JOB_ID)
    return job.next_run_time if job else None


def stored_next_run(settings: TrainingSettings) -> Any:
    """The next run time kept in the job store (None before the first ``schedule``)."""
    scheduler = build_scheduler(settings)
    scheduler.start(paused=True)
    try:
        return next_run_time(scheduler)
    finally:
        scheduler.shutdown(wait=False)


def stop_scheduler(scheduler: BackgroundScheduler, timeout_s: float = 30.0) -> None:
    """Stop firing, stop a run in progress (it records itself as interrupted), then wait."""
    scheduler.pause()
    stop_children(timeout_s)
    scheduler.shutdown(wait=True)


def serve(settings: TrainingSettings, report: Callable[[str], None] = log.info) -> None:
    """``friendbot schedule``: run the schedule in the foreground until SIGINT or SIGTERM."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        report(f"received {signal.Signals(signum).name}: stopping")
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    scheduler = start_scheduler(settings)
    try:
        report(
            f"retraining on '{settings.retrain_cron}' ({settings.timezone()}); "
            f"next run {next_run_time(scheduler)}; Ctrl-C to stop"
        )
        while not stop.wait(3600):
            report(f"next run {next_run_time(scheduler)}")
    finally:
        stop_scheduler(scheduler)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
