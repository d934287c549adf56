"""One retraining run: new exports in, a better model out, or the served model left alone.

The run, top to bottom (``retrain``):

1. take the ``retrain`` lock (one run at a time across processes; a crashed holder is taken
   over) and record the run as ``running``;
2. fingerprint the inputs; skip when they match the last run that reached a decision;
3. check each export; a bad one is left out and named in the run's ``error`` (the others are
   still used; the run fails only when no export is usable);
4. ``prepare`` into a scratch folder (with RETRAIN_USE_FEEDBACK, the bot replies the group
   liked beside it: training.retrain.feedback); train the candidate in a child process (a
   crash or an out-of-memory kill there cannot take this process, or the bot, down), and fit
   the reply scorer into it;
5. evaluate the candidate and the served model on the same held-out sessions (the
   candidate's split) and promote only if ``candidate <= current + RETRAIN_TOLERANCE``;
6. promote atomically (``models/previous`` then ``models/current``), prune old candidates,
   record metrics and the decision.

Anything that goes wrong before step 6 leaves ``models/current`` untouched and the run
``failed`` with the reason in ``error``. A run records its owner (``host:pid:id``): if that
process is killed outright, ``friendbot runs`` shows the run as interrupted at once, and the
next run records it as failed. The training child dies with it (see :func:`run_child`).

Why one file of ~650 lines: a run's steps read top to bottom here, in the order above, and
splitting them would make a reader jump between files to follow one run; the child-process
machinery lives in ``children.py``, the models folder in ``models_folder.py``.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from training.errors import InputError
from training.model.finetune import partial_dir
from training.model.model_dir import resolve_current, validate
from training.output_dirs import (
    DATASET_KIND,
    MODEL_KIND,
    PARTIAL_KIND,
    RUN_KIND,
    make_work_dir,
    remove_owned,
)
from training.retrain import models_folder
from training.retrain.children import RunFailed, last_lines, run_child
from training.retrain.feedback import fit_scorer, write_feedback
from training.retrain.inputs import (
    check_export,
    find_exports,
    fingerprint,
    hash_file,
    history_after_exports,
    history_digest,
    newest_per_chat,
)
from training.settings import TrainingSettings

log = logging.getLogger(__name__)

LOCK_NAME = "retrain"
DECIDED = ("promoted", "rejected")  # runs that reached a decision: what "unchanged since" means
INTERRUPTED = "interrupted"  # shown for a running run whose process is gone (never stored)

Report = Callable[[str], None]


@dataclass(frozen=True)
class RunOutcome:
    """What a run decided, for the CLI, the scheduler and the bot's admin messages."""

    run_id: int | None
    status: str  # skipped | promoted | rejected | failed
    decision: str
    error: str | None = None
    candidate_dir: str | None = None
    candidate_metrics: dict[str, Any] | None = None
    current_metrics: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``friendbot retrain --json``)."""
        return asdict(self)


@dataclass
class _Run:
    """State one run carries from step to step."""

    settings: TrainingSettings
    sessions: sessionmaker[Session]
    run_id: int
    report: Report
    echo: bool
    work_dir: Path
    log_path: Path
    bad_exports: list[str] = field(default_factory=list)
    candidate: Path | None = None

    def discard_candidate(self) -> None:
        """Delete this run's candidate (and training's checkpoints) unless it is served."""
        if self.candidate is None:
            return
        models_dir = Path(self.settings.models_dir)
        served = {resolve_current(models_dir), models_folder.resolve_previous(models_dir)}
        if self.candidate.resolve() not in served:
            remove_owned(self.candidate, MODEL_KIND)
        remove_owned(partial_dir(self.candidate), PARTIAL_KIND)

    def update(self, **values: Any) -> None:
        from storage.runs import update_run

        with self.sessions.begin() as session:
            update_run(session, self.run_id, **values)


def run_record(run: Any) -> dict[str, Any]:
    """A TrainingRun as plain data (``friendbot runs --json``, the bot's ``/runs``).

    A ``running`` run whose owner process is gone from this host (killed with SIGKILL, a
    crash) shows as ``interrupted``: that is what it is, and it would otherwise look alive
    until the next retrain closes it. Only the record shown changes; reading writes nothing.
    """
    from storage.locks import holder_is_dead
    from storage.runs import RUNNING

    status, error = run.status, run.error
    if status == RUNNING and run.owner and holder_is_dead(run.owner):
        status = INTERRUPTED
        host, _, rest = run.owner.partition(":")
        error = error or (
            f"interrupted: its process ({host}, pid {rest.partition(':')[0]}) is gone; the "
            "next retrain records it as failed"
        )
    return {
        "id": run.id,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "status": status,
        "trigger": run.trigger,
        "inputs_fingerprint": run.inputs_fingerprint,
        "candidate_dir": run.candidate_dir,
        "previous_dir": run.previous_dir,
        "candidate_metrics": run.candidate_metrics,
        "current_metrics": run.current_metrics,
        "decision": run.decision,
        "error": error,
        "owner": run.owner,
    }


def retrain(
    settings: TrainingSettings,
    *,
    trigger: str = "cli",
    force: bool = False,
    report: Report | None = None,
    echo: bool = False,
) -> RunOutcome:
    """Run one retraining (see the module docstring); never raises for a failed run.

    ``force`` trains even when the inputs are unchanged. ``report`` receives one line per
    step; ``echo`` copies the training child's output (its progress bar) to stderr.
    """
    from storage.db import make_engine, session_factory, upgrade
    from storage.locks import make_holder, release, try_acquire

    report = report or log.info
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        holder = make_holder()
        if not try_acquire(sessions, LOCK_NAME, holder, settings.retrain_lock_stale_s):
            return _record_busy(sessions, trigger)
        try:
            with _heartbeat(sessions, holder, settings.retrain_lock_stale_s) as lock_ok:
                _close_interrupted_runs(sessions, settings)
                return _locked_run(
                    settings, sessions, trigger, force, report, echo, lock_ok, holder
                )
        finally:
            release(sessions, LOCK_NAME, holder)
    finally:
        engine.dispose()


def _locked_run(
    settings: TrainingSettings,
    sessions: sessionmaker[Session],
    trigger: str,
    force: bool,
    report: Report,
    echo: bool,
    lock_ok: Callable[[], bool],
    owner: str,
) -> RunOutcome:
    """Record the run (owned by this process), do it, and turn any failure into ``failed``."""
    from storage.runs import finish_run, start_run

    with sessions.begin() as session:
        run_id = start_run(session, trigger, owner=owner).id
    work_root = Path(settings.retrain_work_dir)
    run = _Run(
        settings=settings,
        sessions=sessions,
        run_id=run_id,
        report=report,
        echo=echo,
        work_dir=work_root / f"run-{run_id}",
        log_path=work_root / "logs" / f"run-{run_id}.log",
    )
    report(f"run #{run_id} started ({trigger})")
    try:
        make_work_dir(run.work_dir, RUN_KIND)
        outcome = _steps(run, force, lock_ok)
    except BaseException as exc:  # KeyboardInterrupt/SIGTERM too: record why, then go on
        run.discard_candidate()
        error = _describe(exc)
        decision = "failed; the served model is unchanged"
        with sessions.begin() as session:
            finish_run(session, run_id, status="failed", decision=decision, error=error)
        report(f"run #{run_id} failed: {error}")
        if not isinstance(exc, Exception):
            raise
        return RunOutcome(run_id, "failed", decision, error=error)
    finally:
        remove_owned(run.work_dir, RUN_KIND)
    with sessions.begin() as session:
        finish_run(
            session,
            run_id,
            status=outcome.status,
            decision=outcome.decision,
            error=outcome.error,
            candidate_metrics=outcome.candidate_metrics,
            current_metrics=outcome.current_metrics,
        )
    report(f"run #{run_id} {outcome.status}: {outcome.decision}")
    return outcome


def _steps(run: _Run, force: bool, lock_ok: Callable[[], bool]) -> RunOutcome:
    """Steps 2-6 of the module docstring, in order."""
    settings = run.settings
    models_dir = Path(settings.models_dir)
    served = resolve_current(models_dir)
    current, broken = _usable_current(run, served)  # a broken served model counts as none

    # 2. Fingerprint: every file's bytes, the stored history, the options.
    exports = find_exports(settings.exports_dir)
    if not exports:
        raise InputError(f"{settings.exports_dir}: no Telegram export (*.json) to train on")
    hashes = {path: hash_file(path) for path in exports}
    excluded = _opted_out(run.sessions)
    history = _history_digest(run) if settings.retrain_include_bot_history else None
    options = _fingerprint_options(settings, excluded)
    if settings.retrain_use_feedback:  # new reactions are new inputs (absent when off, so
        options["feedback"] = _feedback_digest(run)  # older fingerprints still match)
    history_hash = history[0] if history else None
    quick = fingerprint((h.sha256 for h in hashes.values()), history_hash, options)
    last = _last_decided(run.sessions)
    can_skip = not force and current is not None and last is not None
    if can_skip and last.inputs_fingerprint == quick:
        run.update(inputs_fingerprint=quick)
        return _skipped(run, last, quick)

    # The friends' verdict on the served model (/guess): recorded with the run, and with
    # RETRAIN_FOOL_GATE_VOTES a served model is not replaced before it has been judged.
    judged = _served_judgement(run, current)
    waiting = _not_judged_yet(settings.retrain_fool_gate_votes, current, judged)
    if waiting:
        return _outcome(run, "skipped", waiting, None, None, _judged_metrics(current, judged))

    # 3. Check each export; leave bad ones out, fail only when none is usable.
    run.report(f"checking {len(exports)} export(s)")
    one_voice_ok = bool(settings.retrain_prepare_options.get("allow_single_speaker", False))
    checks = [check_export(path, settings.retrain_chat, one_voice_ok) for path in exports]
    good = [c for c in checks if c.error is None]
    run.bad_exports = [c.error for c in checks if c.error is not None]
    for error in run.bad_exports:
        run.report(f"left out: {error}")
    for warning in (w for c in good for w in c.warnings):
        run.report(f"warning: {warning}")
    if not good:
        raise RunFailed("no usable export: " + "; ".join(run.bad_exports))
    inputs = fingerprint((hashes[c.path].sha256 for c in good), history_hash, options)
    run.update(inputs_fingerprint=inputs)
    if can_skip and last.inputs_fingerprint == inputs:
        return _skipped(run, last, inputs)

    # 4. Prepare into scratch space, then train the candidate in a child process.
    data_dir = run.work_dir / "data"
    stats = _prepare(run, [c.path for c in good], newest_per_chat(good), excluded, data_dir)
    if settings.retrain_use_feedback:
        stats["feedback"] = _add_feedback(run, data_dir)
    candidate = models_dir / models_folder.candidate_name(run.run_id, datetime.now(UTC))
    run.candidate = candidate
    run.update(candidate_dir=str(candidate), previous_dir=str(served) if served else None)
    base = str(current) if settings.retrain_from == "current" and current else None
    _train(run, data_dir, base or settings.retrain_base_model, candidate)
    if settings.retrain_use_feedback:
        run.report(fit_scorer(data_dir, candidate))

    # 5. Judge both models on the candidate's held-out sessions.
    split = _eval_split(data_dir, settings.retrain_eval_split)
    candidate_metrics = _evaluate(run, candidate, data_dir, split) | _input_stats(stats)
    current_metrics = _evaluate(run, current, data_dir, split) if current else None
    accept, decision = _decide(
        candidate_metrics, current_metrics, settings.retrain_tolerance, broken
    )
    if broken:
        current_metrics = {"model_dir": str(served), "unusable": broken}
    if current_metrics is not None and judged is not None:
        current_metrics["judged"] = judged.to_dict()
    if not accept:
        run.discard_candidate()
        return _outcome(run, "rejected", decision, candidate, candidate_metrics, current_metrics)

    # 6. Promote atomically; keep the previous; prune the rest.
    if not lock_ok():
        raise RunFailed("lost the retrain lock before promotion (heartbeat too slow?)")
    decision += _maybe_export_ct2(run, candidate, served)
    models_folder.promote(models_dir, candidate)
    removed = models_folder.prune(models_dir, settings.keep_models)
    if removed:
        run.report("pruned " + ", ".join(p.name for p in removed))
    return _outcome(run, "promoted", decision, candidate, candidate_metrics, current_metrics)


# --- the steps' pieces --------------------------------------------------------------------


def _served_judgement(run: _Run, current: Path | None) -> Any:
    """The friends' votes on the served model's /guess lines (a storage.judge.Judgement),
    or None when it has no revealed round (or nothing is served)."""
    from storage.judge import model_judgement

    if current is None:
        return None
    with run.sessions() as session:
        return model_judgement(session, str(current.resolve()))


def _not_judged_yet(min_votes: int, current: Path | None, judged: Any) -> str | None:
    """Why the run stops here under the fool-rate gate, or None to go on.

    A candidate has no /guess rounds before it serves, so "not worse on fool rate" cannot be
    checked before promotion. What the gate can do is make sure every model in service gets
    judged: with RETRAIN_FOOL_GATE_VOTES=N a served model is only replaced once the friends
    gave N votes on its bot lines, so its fool rate is on record (and comparable with the
    next model's) before it goes. Off (0) by default: a group that does not play /guess
    would otherwise never retrain.
    """
    if min_votes <= 0 or current is None:
        return None
    votes = judged.fooled.votes if judged is not None else 0
    if votes >= min_votes:
        return None
    return (
        f"skipped: the served model has {votes} of the {min_votes} /guess votes on its lines "
        "that RETRAIN_FOOL_GATE_VOTES asks for before it is replaced (play /guess, or set it "
        "to 0)"
    )


def _judged_metrics(current: Path | None, judged: Any) -> dict[str, Any] | None:
    if current is None:
        return None
    metrics: dict[str, Any] = {"model_dir": str(current)}
    if judged is not None:
        metrics["judged"] = judged.to_dict()
    return metrics


def _opted_out(sessions: sessionmaker[Session]) -> list[str]:
    """Members who opted out through the bot, as export sender ids: never trained on."""
    from storage.history import opted_out_ids

    with sessions() as session:
        return sorted(f"user{user_id}" for user_id in opted_out_ids(session))


def _history_digest(run: _Run) -> tuple[str, int]:
    with run.sessions() as session:
        digest, count = history_digest(session)
    run.report(f"{count} stored human message(s) in the database")
    return digest, count


def _feedback_digest(run: _Run) -> str:
    from storage.feedback import feedback_digest

    with run.sessions() as session:
        digest, count = feedback_digest(session)
    run.report(f"{count} bot repl(ies) the group liked or disliked")
    return digest


def _add_feedback(run: _Run, data_dir: Path) -> dict[str, int]:
    """``feedback.parquet`` beside the prepared data: liked replies train, all fit the scorer."""
    with run.sessions() as session:
        counts = write_feedback(session, data_dir)
    run.report(
        f"feedback: {counts['liked']} liked repl(ies) -> {counts['extra_examples']} extra "
        f"training example(s); {counts['disliked']} disliked kept for the reply scorer"
    )
    return counts


def _fingerprint_options(settings: TrainingSettings, excluded: list[str]) -> dict[str, Any]:
    """The settings that change what a run trains or how it judges (not when or where)."""
    return {
        "retrain_from": settings.retrain_from,
        "base_model": settings.retrain_base_model,
        "chat": settings.retrain_chat,
        "include_bot_history": settings.retrain_include_bot_history,
        "prepare_options": settings.retrain_prepare_options,
        "train_command": settings.retrain_train_command,
        "train_args": settings.retrain_train_args,
        "tolerance": settings.retrain_tolerance,
        "eval_split": settings.retrain_eval_split,
        "excluded": excluded,
    }


def _last_decided(sessions: sessionmaker[Session]) -> Any:
    """The newest run that got as far as a decision (promoted or rejected)."""
    from storage.models import TrainingRun

    stmt = (
        select(TrainingRun)
        .where(TrainingRun.status.in_(DECIDED))
        .order_by(TrainingRun.started_at.desc(), TrainingRun.id.desc())
        .limit(1)
    )
    with sessions() as session:
        return session.scalars(stmt).first()


def _skipped(run: _Run, last: Any, inputs: str) -> RunOutcome:
    decision = f"skipped: inputs unchanged since run #{last.id} ({last.status})"
    return _outcome(run, "skipped", decision, None, None, None)


def _outcome(
    run: _Run,
    status: str,
    decision: str,
    candidate: Path | None,
    candidate_metrics: dict[str, Any] | None,
    current_metrics: dict[str, Any] | None,
) -> RunOutcome:
    """The final record; bad exports that were left out go in ``error`` whatever the status."""
    error = None
    if run.bad_exports:
        error = "bad export(s) left out: " + "; ".join(run.bad_exports)
    return RunOutcome(
        run.run_id,
        status,
        decision,
        error=error,
        candidate_dir=str(candidate) if candidate else None,
        candidate_metrics=candidate_metrics,
        current_metrics=current_metrics,
    )


def _prepare_options(settings: TrainingSettings, excluded: list[str]) -> Any:
    """PrepareOptions from RETRAIN_PREPARE_OPTIONS, RETRAIN_CHAT and the bot's opt-outs."""
    from training.data.prepare import PrepareOptions

    overrides = dict(settings.retrain_prepare_options)
    known = {f.name for f in fields(PrepareOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(
            f"RETRAIN_PREPARE_OPTIONS: unknown option(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})"
        )
    if settings.retrain_chat is not None:
        overrides.setdefault("chat", settings.retrain_chat)
    own = overrides.get("exclude", ())
    overrides["exclude"] = [*([own] if isinstance(own, str) else own), *excluded]
    try:
        return PrepareOptions(**overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(f"RETRAIN_PREPARE_OPTIONS: {exc}") from exc


def _prepare(
    run: _Run,
    exports: list[Path],
    newest: dict[int, int],
    excluded: list[str],
    data_dir: Path,
) -> dict[str, Any]:
    """Write the run's dataset (exports + stored history) and return its stats."""
    from training.data.prepare import prepare

    options = _prepare_options(run.settings, excluded)
    run.report(f"preparing {len(exports)} export(s) into {data_dir}")
    remove_owned(data_dir, DATASET_KIND)
    with run.sessions() as session:
        extra: Any = ()
        if run.settings.retrain_include_bot_history:
            extra = history_after_exports(session, newest)
        stats = prepare(exports, data_dir, options, extra_messages=extra)
    return stats.to_dict()


def _input_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The dataset figures worth keeping with the candidate's metrics."""
    return {
        "train_pairs": stats.get("pairs", {}).get("train"),
        "sessions": stats.get("sessions", {}).get("total"),
        "messages": stats.get("messages_kept"),
        "history_messages": stats.get("extra_messages"),
        **({"feedback": stats["feedback"]} if "feedback" in stats else {}),
        "exports": [Path(f["path"]).name for f in stats.get("files", [])],
    }


def _train(run: _Run, data_dir: Path, base_model: str, out: Path) -> None:
    """Train the candidate in a child process; its output goes to the run's log file."""
    settings = run.settings
    argv = [
        *settings.train_command(),
        "--data",
        str(data_dir),
        "--base-model",
        base_model,
        "--out",
        str(out),
        *settings.train_extra_args(),
    ]
    run.report(f"training from {base_model} -> {out.name} (log: {run.log_path})")
    rc, tail = run_child(argv, run.log_path, settings.retrain_train_timeout_s, run.echo)
    if rc != 0:
        why = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        raise RunFailed(f"training failed ({why}); log {run.log_path}: {last_lines(tail)}")
    if not models_folder.is_model_dir(out):
        raise RunFailed(f"training exited 0 but wrote no model at {out}; log {run.log_path}")


def _eval_split(data_dir: Path, preferred: str) -> str:
    """The held-out split to judge on: the preferred one, else the other if it has rows."""
    import pyarrow.parquet as pq

    for split in (preferred, "test" if preferred == "validation" else "validation"):
        path = data_dir / f"{split}.parquet"
        if path.is_file() and pq.ParquetFile(path).metadata.num_rows > 0:
            return split
    raise RunFailed(
        "no held-out sessions to judge the candidate on (validation and test splits are "
        "empty: the exports are too small)"
    )


def _usable_current(run: _Run, served: Path | None) -> tuple[Path | None, str | None]:
    """The served model if it is usable, else (None, why it is not).

    A broken served model is no yardstick: without its tokenizer vocabulary it scored a
    meaningless (lower) loss, and the gate kept it in service against a real candidate. It
    counts as no model at all, is not trained from, and a valid candidate replaces it.
    """
    if served is None:
        return None, None
    try:
        validate(served)
    except InputError as exc:
        run.report(f"the served model is not usable: {exc}")
        return None, str(exc)
    return served, None


def _evaluate(run: _Run, model_dir: Path, data_dir: Path, split: str) -> dict[str, Any]:
    """Loss and perplexity of one model on the held-out split (in this process)."""
    import pyarrow.parquet as pq

    from training.model.evaluate import evaluate_loss

    run.report(f"evaluating {model_dir.name} on the {split} split")
    loss = float(evaluate_loss(model_dir, data_dir, split))
    pairs = pq.ParquetFile(data_dir / f"{split}.parquet").metadata.num_rows
    return {
        "model_dir": str(model_dir),
        "split": split,
        "pairs": pairs,
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 50 else math.inf,
    }


def _decide(
    candidate: dict[str, Any],
    current: dict[str, Any] | None,
    tolerance: float,
    broken: str | None = None,
) -> tuple[bool, str]:
    """Promote when the candidate is not worse than the served model by more than tolerance.

    ``broken``: why the served model is unusable (it then counts as no model).
    """
    cand = candidate["loss"]
    if not math.isfinite(cand):
        return False, f"rejected: candidate loss is {cand}"
    if current is None and broken:
        return (
            True,
            f"promoted: the served model is not usable ({broken}); candidate loss {cand:.4f}",
        )
    if current is None:
        return True, f"promoted: no model was in service (candidate loss {cand:.4f})"
    cur = current["loss"]
    if cand <= cur + tolerance:
        return True, f"promoted: candidate loss {cand:.4f} <= current {cur:.4f} + {tolerance:g}"
    return False, (
        f"rejected: candidate loss {cand:.4f} > current {cur:.4f} + {tolerance:g}; "
        "the served model is unchanged"
    )


def _maybe_export_ct2(run: _Run, candidate: Path, current: Path | None) -> str:
    """Convert the candidate for CTranslate2 when the served model uses it (or always).

    Without this, a promotion would silently move the bot from the fast int8 backend to HF
    generate. A failed conversion does not block the promotion (HF still serves); it is noted.
    """
    mode = run.settings.retrain_export_ct2
    wanted = mode == "always" or (
        mode == "auto" and current is not None and (current / "ct2").is_dir()
    )
    if not wanted:
        return ""
    run.report("converting the candidate for CTranslate2")
    argv = [sys.executable, "-m", "training.cli", "export-ct2", str(candidate)]
    rc, tail = run_child(argv, run.log_path, run.settings.retrain_train_timeout_s, run.echo)
    if rc != 0:
        return f" (CTranslate2 conversion failed, served with HF: {last_lines(tail)})"
    return ""


# --- lock and housekeeping ------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """One line saying why a run failed."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, SystemExit):
        return f"interrupted (process asked to exit, status {exc.code})"
    if isinstance(exc, RunFailed | InputError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _heartbeat(
    sessions: sessionmaker[Session], holder: str, stale_after_s: float
) -> Iterator[Callable[[], bool]]:
    """Keep the lock fresh from a thread; yields a check that it is still ours."""
    from storage.locks import LockLost, heartbeat

    stop = threading.Event()
    lost = threading.Event()
    interval = max(1.0, stale_after_s / 5)

    def beat() -> None:
        while not stop.wait(interval):
            try:
                heartbeat(sessions, LOCK_NAME, holder)
            except LockLost:
                log.error("retrain lock taken over by another process")
                lost.set()
                return
            except Exception:  # a database hiccup: try again next beat
                log.exception("retrain lock heartbeat failed")

    thread = threading.Thread(target=beat, name="retrain-heartbeat", daemon=True)
    thread.start()
    try:
        yield lambda: not lost.is_set()
    finally:
        stop.set()
        thread.join(timeout=5)


def _record_busy(sessions: sessionmaker[Session], trigger: str) -> RunOutcome:
    """Another run holds the lock: say so in a ``skipped`` record and do nothing else."""
    from storage.locks import current_holder
    from storage.runs import finish_run, start_run

    holder = current_holder(sessions, LOCK_NAME) or "another process"
    decision = f"skipped: another retraining run is in progress (lock held by {holder})"
    with sessions.begin() as session:
        run_id = start_run(session, trigger).id
        finish_run(session, run_id, status="skipped", decision=decision)
    log.info("run #%s %s", run_id, decision)
    return RunOutcome(run_id, "skipped", decision)


def _close_interrupted_runs(sessions: sessionmaker[Session], settings: TrainingSettings) -> None:
    """Runs left ``running`` by a crashed holder: record what became of them.

    Called with the lock held, so no such run can still be alive. If its candidate did get
    promoted before the crash, say so; otherwise it failed. Its scratch data is removed.
    """
    from storage.models import TrainingRun
    from storage.runs import finish_run

    models_dir = Path(settings.models_dir)
    current = resolve_current(models_dir)
    keep = {current, models_folder.resolve_previous(models_dir)}
    with sessions.begin() as session:
        stale = session.scalars(select(TrainingRun).where(TrainingRun.status == "running"))
        for run in list(stale):
            candidate = Path(run.candidate_dir) if run.candidate_dir else None
            if candidate is not None and candidate.resolve() == current:
                finish_run(
                    session,
                    run.id,
                    status="promoted",
                    decision="promoted; the process stopped before recording its metrics",
                )
            else:
                finish_run(
                    session,
                    run.id,
                    status="failed",
                    decision="failed; the served model is unchanged",
                    error="interrupted: the process running it stopped (crash or kill)",
                )
                if candidate is not None:
                    if candidate.resolve() not in keep:
                        remove_owned(candidate, MODEL_KIND)
                    remove_owned(partial_dir(candidate), PARTIAL_KIND)
            remove_owned(Path(settings.retrain_work_dir) / f"run-{run.id}", RUN_KIND)
