"""``friendbot retrain``, ``runs``, ``rollback`` and ``schedule``: retraining from the shell.

Settings come from the environment (see docs/retraining.md), so these commands, the
scheduler and the bot all act on the same folders and database.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

_out = Console()
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Attach the retraining commands to the ``friendbot`` app."""
    app.command("retrain")(retrain)
    app.command("runs")(runs)
    app.command("rollback")(rollback)
    app.command("schedule")(schedule)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so a stopped run is recorded (and its child stopped)."""

    def handler(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def retrain(
    force: Annotated[
        bool, typer.Option("--force", help="Train even if the inputs are unchanged.")
    ] = False,
    trigger: Annotated[
        str, typer.Option(help="Recorded as the run's trigger: cli, manual or schedule.")
    ] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Retrain once from the exports folder; promote the candidate only if it is as good.

    Exit status 0 when the run was skipped, promoted or rejected; 1 when it failed (the
    served model is then unchanged and `friendbot runs` says why).
    """
    from training.retrain.pipeline import retrain as run_retrain
    from training.settings import load_settings

    if trigger not in ("cli", "manual", "schedule"):
        raise typer.BadParameter("must be cli, manual or schedule", param_hint="--trigger")
    settings = load_settings()
    if as_json:  # stdout is for the JSON line alone

        def report(line: str) -> None:
            _err.print(line, markup=False, highlight=False)
    else:

        def report(line: str) -> None:
            _out.print(f"· {line}", markup=False, highlight=False)

    with _sigterm_as_exit():
        outcome = run_retrain(
            settings,
            trigger=trigger,
            force=force,
            report=report,
            echo=not as_json and sys.stderr.isatty(),
        )
    if as_json:
        print(json.dumps(outcome.to_dict(), default=str))
    else:
        _print_outcome(outcome)
    if outcome.status == "failed":
        raise typer.Exit(1)


def _print_outcome(outcome: Any) -> None:
    color = {"promoted": "green", "rejected": "yellow", "failed": "red"}.get(outcome.status, "")
    status = f"[{color}]{outcome.status}[/{color}]" if color else outcome.status
    _out.print(f"run #{outcome.run_id}: {status}", highlight=False)
    _out.print(outcome.decision, markup=False, highlight=False)
    if outcome.error:
        _out.print(f"error: {outcome.error}", style="red", markup=False, highlight=False)


def runs(
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 10,
    run_id: Annotated[
        int | None, typer.Option("--run", help="Show everything recorded for one run.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List recent retraining runs: when, why, status, both models' loss, the decision."""
    from rich.table import Table

    from storage.db import open_existing, reading
    from storage.judge import model_judgement
    from storage.runs import get_run, recent_runs
    from training.errors import InputError
    from training.model.model_dir import resolve_current
    from training.retrain.models_folder import resolve_previous
    from training.settings import load_settings

    settings = load_settings()
    engine = open_existing(settings.database_url)  # reads only: creates and migrates nothing
    from training.retrain.pipeline import run_record  # heavy: not before the database is fine

    try:
        with reading(engine) as session:
            if run_id is not None:
                found = get_run(session, run_id)
                if found is None:
                    raise InputError(f"--run {run_id}: no such training run")
                rows = [found]
            else:
                rows = recent_runs(session, limit)
            records = [run_record(r) for r in rows]
            served = resolve_current(Path(settings.models_dir))
            judged = model_judgement(session, str(served)) if served else None
    finally:
        engine.dispose()
    if as_json or run_id is not None:
        text = json.dumps(records if run_id is None else records[0], indent=2, default=str)
        print(text)
        return
    table = Table(title="Retraining runs (newest first)")
    for column in ("run", "started", "took", "trigger", "status", "candidate", "current"):
        table.add_column(column, justify="right" if column in ("run", "took") else "left")
    table.add_column("decision / error", overflow="fold")
    for rec in records:
        note = _escape(rec["decision"] or "")
        if rec["error"]:
            note += f"\n[red]{_escape(rec['error'])}[/red]"
        table.add_row(
            str(rec["id"]),
            _local(rec["started_at"]),
            _took(rec["started_at"], rec["finished_at"]),
            rec["trigger"],
            _status(rec["status"]),
            _loss(rec["candidate_metrics"]),
            _loss(rec["current_metrics"]),
            note,
        )
    _out.print(table)
    models_dir = Path(settings.models_dir)
    _out.print(f"serving:  {resolve_current(models_dir) or '(nothing)'}", highlight=False)
    _out.print(f"previous: {resolve_previous(models_dir) or '(none)'}", highlight=False)
    if served is not None:  # the friends' verdict on it: /guess rounds (docs/bot.md)
        verdict = judged.summary() if judged else "no round revealed yet"
        _out.print(f"/guess:   {verdict}", markup=False, highlight=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _local(when: datetime | None) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when else ""


def _took(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "…"
    seconds = int((end - start).total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _status(status: str) -> str:
    color = {"promoted": "green", "rejected": "yellow", "failed": "red", "running": "cyan"}
    return f"[{color[status]}]{status}[/]" if status in color else status


def _loss(metrics: dict[str, Any] | None) -> str:
    if not metrics or "loss" not in metrics:
        return ""
    return f"{metrics['loss']:.4f}"


def rollback(
    to: Annotated[
        Path | None,
        typer.Argument(help="Model directory to serve (default: models/previous)."),
    ] = None,
) -> None:
    """Serve the previous model again (or TO); the replaced one becomes `previous`.

    Takes the retrain lock, so it never races a promotion; running it twice rolls forward.
    A running bot picks the change up on its next model check (or /reload).
    """
    from storage.db import make_engine, session_factory, upgrade
    from storage.locks import current_holder, make_holder, release, try_acquire
    from training.errors import InputError
    from training.model.model_dir import rollback_target
    from training.retrain.models_folder import rollback as do_rollback
    from training.retrain.pipeline import LOCK_NAME
    from training.settings import load_settings

    settings = load_settings()
    rollback_target(Path(settings.models_dir), to)  # refuse before creating a database
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    holder = make_holder()
    if not try_acquire(sessions, LOCK_NAME, holder, settings.retrain_lock_stale_s):
        who = current_holder(sessions, LOCK_NAME)
        engine.dispose()
        raise InputError(f"a retraining run is in progress ({who}); roll back after it ends")
    try:
        old, new = do_rollback(Path(settings.models_dir), to)
    finally:
        release(sessions, LOCK_NAME, holder)
        engine.dispose()
    _out.print(f"now serving {new}", highlight=False)
    _out.print(f"previous:   {old or '(none)'}", highlight=False)


def schedule(
    show: Annotated[
        bool, typer.Option("--show", help="Print when the next run is due, then exit.")
    ] = False,
) -> None:
    """Retrain on RETRAIN_CRON (APScheduler; the job is kept in the database) until stopped.

    Missed runs while nothing was scheduling run once on the next start. Use this, or
    RETRAIN_IN_BOT=true to run the same schedule inside the bot.
    """
    from training.retrain.scheduler import make_trigger, serve, stored_next_run
    from training.settings import load_settings

    settings = load_settings()
    if show:
        trigger = make_trigger(settings)
        now = datetime.now(settings.timezone())
        _out.print(
            f"RETRAIN_CRON '{settings.retrain_cron}' ({settings.timezone()}): "
            f"next run {trigger.get_next_fire_time(None, now)}",
            highlight=False,
        )
        _out.print(f"job store: next run {stored_next_run(settings) or '(no job yet)'}")
        return
    serve(settings, report=lambda line: _out.print(line, markup=False, highlight=False))
