"""Retraining, seen from the bot: hot swap, admin messages, /retrain and /runs.

Installed as an extension of the Telegram application (``bot.app.extensions``):

- a watcher (every ``RETRAIN_WATCH_INTERVAL_S``) notices that ``MODEL_DIR`` (``models/current``)
  now points at another model and reloads it through ``FriendBot.reload``: the new model is
  loaded in a thread while the old one keeps answering, then swapped between replies, so no
  update waits or is dropped;
- the same watcher finds runs that finished since it last looked (whoever ran them: the
  schedule, ``friendbot retrain``, /retrain) and messages the admins the decision and the
  metrics; the last one reported is kept in the database, so a restart neither repeats nor
  misses a message;
- ``/retrain [force]`` (admins) starts a run now and ``/runs`` lists the last ones;
- with ``RETRAIN_IN_BOT=true`` the retraining schedule (training.retrain.scheduler) runs inside the
  bot process.

Training never runs in the bot process: every run is a ``friendbot retrain`` child process
(which itself trains in a grandchild), so the bot keeps answering and a crash there is only a
failed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram import BotCommand, Update
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CommandHandler,
    ContextTypes,
    filters,
)

from bot.handlers import COMMANDS_KEY, SERVICE_KEY, notify_admins, require_admin

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

    from bot.service import FriendBot
    from training.settings import TrainingSettings

log = logging.getLogger(__name__)

HOOKS_KEY = "retrain_hooks"
"""``application.bot_data[HOOKS_KEY]``: this module's :class:`RetrainHooks`."""
STATE_KEY = "retrain.reported"
"""BotState row: (finished_at, id) of the last finished run the admins were told about."""
WATCH_JOB = "retrain-watch"
RUNS_SHOWN = 5
MENU = [
    BotCommand("retrain", "Admins: retrain now (/retrain force: even if nothing changed)"),
    BotCommand("runs", "Admins: the last retraining runs"),
]


def install(application: Application) -> None:
    """Wire the watcher, /retrain, /runs and (RETRAIN_IN_BOT) the schedule into the bot."""
    service: FriendBot = application.bot_data[SERVICE_KEY]
    bot_settings = service.settings  # the process's one settings object, retraining included
    hooks = RetrainHooks(application, service, bot_settings)
    application.bot_data[HOOKS_KEY] = hooks

    # Both set and different is refused by the settings; this is MODEL_DIR alone elsewhere.
    promoted_to = Path(bot_settings.models_dir) / "current"
    if Path(bot_settings.model_dir).absolute() != promoted_to.absolute():
        log.warning(
            "MODEL_DIR=%s is not MODELS_DIR/current (%s): promoted models will not be served "
            "automatically",
            bot_settings.model_dir,
            promoted_to,
        )
    where = filters.Chat(chat_id=bot_settings.allowed_chat_ids) | (
        filters.ChatType.PRIVATE & filters.User(user_id=bot_settings.admin_user_ids)
    )
    where = where & filters.UpdateType.MESSAGE
    # group -1: before the core handlers, whose catch-all drops chats outside ALLOWED_CHAT_IDS
    # (an admin's private chat with the bot is where these commands are most at home)
    application.add_handler(CommandHandler("retrain", retrain_command, filters=where), group=-1)
    application.add_handler(CommandHandler("runs", runs_command, filters=where), group=-1)
    application.bot_data.setdefault(COMMANDS_KEY, []).extend(MENU)

    interval = hooks.settings.retrain_watch_interval_s
    if application.job_queue is None:
        raise RuntimeError("retraining hooks need PTB's JobQueue (APScheduler installed)")
    # APScheduler logs two INFO lines per job run: every 5 s that is ~35,000 lines a day of
    # "Running job watch". Its warnings (a missed or failed run) still reach the log.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    application.job_queue.run_repeating(watch, interval=interval, first=interval, name=WATCH_JOB)
    if hooks.settings.retrain_in_bot:
        application.job_queue.run_once(start_schedule, when=0, name="retrain-schedule")

    original = application.post_shutdown

    async def post_shutdown(app: Application) -> None:
        await hooks.shutdown()
        if original is not None:
            await original(app)

    application.post_shutdown = post_shutdown


def hooks_of(context: ContextTypes.DEFAULT_TYPE) -> RetrainHooks:
    """This application's :class:`RetrainHooks`."""
    return context.application.bot_data[HOOKS_KEY]


class RetrainHooks:
    """The bot's retraining state: what it told admins, runs it started, the scheduler."""

    def __init__(
        self, application: Application, service: FriendBot, settings: TrainingSettings
    ) -> None:
        self.application = application
        self.service = service
        self.settings = settings
        self.scheduler: BackgroundScheduler | None = None
        self.manual: set[asyncio.Task[None]] = set()
        self.children: set[asyncio.subprocess.Process] = set()
        self.told: dict[int, set[int]] = {}  # run id -> admins who already got its result
        self.failed_model: Path | None = None
        self.started_at = datetime.now(UTC)

    # --- hot swap -----------------------------------------------------------------------------

    async def check_model(self) -> bool:
        """Reload when MODEL_DIR now resolves to another model; True if a reload happened."""
        service = self.service
        if not service.models.loaded:
            return False
        target = Path(service.settings.model_dir).resolve()
        served = service.models.current.chat.model_dir
        if target == served or target == self.failed_model:
            return False
        if not (target / "config.json").is_file():
            return False  # nothing (finished) there: keep serving
        log.info("model changed: %s -> %s; reloading", served, target)
        try:
            await service.reload()
        except Exception as exc:
            self.failed_model = target
            log.exception("could not load %s; still serving %s", target, served)
            await self.tell_admins(
                f"Could not load the new model {target}: {exc}\nStill serving {served}."
            )
            return False
        self.failed_model = None
        return True

    # --- admin messages -----------------------------------------------------------------------

    async def check_runs(self) -> int:
        """Tell the admins about runs finished since last time; returns how many were new."""
        runs = await asyncio.to_thread(self._new_finished_runs)
        for run in runs:
            if worth_telling(run):
                await self.tell_admins(format_run(run), run_id=run["id"])
        return len(runs)

    def _new_finished_runs(self) -> list[dict[str, Any]]:
        """Finished runs after the stored mark, oldest first; moves the mark past them.

        The mark is (finished_at, id) rather than the id alone: a long run may finish after
        a later, quick one (a skipped one) and must still be reported.
        """
        from storage.runs import finished_after
        from storage.state import get_state, set_state
        from training.retrain.pipeline import run_record

        with self.service.sessions.begin() as session:
            mark = get_state(session, STATE_KEY)
            if mark is None:  # first start ever: report what finishes from now on
                mark = [self.started_at.isoformat(), 0]
                set_state(session, STATE_KEY, mark)
            when, run_id = mark
            runs = finished_after(session, datetime.fromisoformat(when) if when else None, run_id)
            if runs:
                set_state(session, STATE_KEY, [runs[-1].finished_at.isoformat(), runs[-1].id])
            return [run_record(r) for r in runs]

    async def tell_admins(self, text: str, run_id: int | None = None) -> int:
        """Message every admin privately (skipping those who already got this run's result)."""
        told = self.told.pop(run_id, set()) if run_id is not None else set()
        return await notify_admins(self.application, text, skip=told)

    # --- runs started from Telegram ------------------------------------------------------------

    def start_manual(self, chat_id: int, force: bool) -> bool:
        """Start ``friendbot retrain --trigger manual`` unless one started here still runs."""
        if self.manual:
            return False
        task = asyncio.get_running_loop().create_task(self._manual_run(chat_id, force))
        self.manual.add(task)
        task.add_done_callback(self.manual.discard)
        return True

    async def _manual_run(self, chat_id: int, force: bool) -> None:
        """Run the child, then answer in the chat that asked (a task of its own, not PTB's:
        PTB's stop() waits for its tasks, and a run can take hours)."""
        args = ["-m", "training.cli", "retrain", "--trigger", "manual", "--json"]
        if force:
            args.append("--force")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        self.children.add(proc)
        try:
            out, _ = await proc.communicate()
        finally:
            self.children.discard(proc)
        outcome = parse_outcome(out.decode("utf-8", "replace"))
        if outcome is None:
            text = f"Retraining could not run (exit status {proc.returncode}); see the bot's log."
        else:
            text = format_outcome(outcome)
            if chat_id in self.service.settings.admin_user_ids and outcome.get("run_id"):
                self.told.setdefault(outcome["run_id"], set()).add(chat_id)
        with contextlib.suppress(Exception):
            await self.application.bot.send_message(chat_id, text)
        if outcome and outcome.get("status") == "promoted":
            await self.check_model()  # serve it now rather than at the next watch

    # --- the schedule ------------------------------------------------------------------------

    async def start_schedule(self) -> None:
        from training.retrain.scheduler import next_run_time, start_scheduler

        self.scheduler = await asyncio.to_thread(start_scheduler, self.settings)
        log.info("retraining schedule in the bot: next run %s", next_run_time(self.scheduler))

    async def shutdown(self) -> None:
        """Stop the schedule and any run started here (they record themselves interrupted)."""
        from training.retrain.scheduler import stop_scheduler

        if self.scheduler is not None:
            await asyncio.to_thread(stop_scheduler, self.scheduler)
            self.scheduler = None
        for proc in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in list(self.children):
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
        for task in list(self.manual):
            task.cancel()
        await asyncio.gather(*self.manual, return_exceptions=True)


# --- jobs and commands ---------------------------------------------------------------------------


async def watch(context: ContextTypes.DEFAULT_TYPE) -> None:
    """The periodic check: a promoted model to load, finished runs to report."""
    hooks = hooks_of(context)
    try:
        await hooks.check_model()
        await hooks.check_runs()
    except Exception:  # never let one bad check stop the watching
        log.exception("retraining watcher failed; trying again next time")


async def start_schedule(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start the retraining schedule inside the bot (RETRAIN_IN_BOT)."""
    await hooks_of(context).start_schedule()


async def retrain_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start a retraining run now (admins); the result is posted here when it is done."""
    msg = update.effective_message
    if not await require_admin(update, context, "retrain"):
        raise ApplicationHandlerStop
    force = bool(context.args) and context.args[0].lower() == "force"
    if hooks_of(context).start_manual(msg.chat_id, force):
        await msg.reply_text(
            "Retraining started"
            + (" (forced)" if force else "")
            + ". I'll post the result here; replies go on meanwhile."
        )
    else:
        await msg.reply_text("A retraining run started from Telegram is still going.")
    raise ApplicationHandlerStop


async def runs_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """List the last retraining runs (admins)."""
    msg = update.effective_message
    service: FriendBot = context.application.bot_data[SERVICE_KEY]
    if not await require_admin(update, context, "runs"):
        raise ApplicationHandlerStop
    runs = await asyncio.to_thread(_recent, service, RUNS_SHOWN)
    text = "\n\n".join(format_run(run, brief=True) for run in runs) or "No retraining runs yet."
    await msg.reply_text(text)
    raise ApplicationHandlerStop


def _recent(service: FriendBot, limit: int) -> list[dict[str, Any]]:
    from storage.runs import recent_runs
    from training.retrain.pipeline import run_record

    with service.sessions() as session:
        return [run_record(r) for r in recent_runs(session, limit)]


# --- words -------------------------------------------------------------------------------------


def worth_telling(run: dict[str, Any]) -> bool:
    """Decisions and failures always; a skipped run only when something was wrong."""
    return run["status"] in ("promoted", "rejected", "failed") or bool(run.get("error"))


def parse_outcome(stdout: str) -> dict[str, Any] | None:
    """The JSON line ``friendbot retrain --json`` prints last (None if there is none)."""
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(line)
            if isinstance(value, dict) and "status" in value:
                return value
    return None


def _metrics_line(label: str, metrics: dict[str, Any] | None) -> str | None:
    if not metrics or "loss" not in metrics:
        return None
    name = Path(metrics.get("model_dir") or "").name or "?"
    parts = [f"{label}: {name}", f"loss {metrics['loss']:.4f}"]
    if metrics.get("perplexity") is not None:
        parts.append(f"perplexity {metrics['perplexity']:.2f}")
    if metrics.get("pairs") is not None:
        parts.append(f"{metrics['pairs']} held-out pairs ({metrics.get('split', '?')})")
    return " · ".join(parts)


def judged_line(metrics: dict[str, Any] | None) -> str | None:
    """The friends' verdict on the model that was in service (/guess), when they gave one."""
    from storage.judge import Judgement

    if not metrics or not metrics.get("judged"):
        return None
    judged = Judgement.from_dict(metrics["judged"])
    name = Path(metrics.get("model_dir") or "").name or "the served model"
    return f"/guess on {name}: {judged.summary()}"


def format_outcome(outcome: dict[str, Any]) -> str:
    """The answer to /retrain: status, decision, both models' metrics."""
    lines = [f"Retraining run #{outcome.get('run_id')}: {outcome.get('status')}"]
    lines.append(outcome.get("decision") or "")
    for label, key in (("candidate", "candidate_metrics"), ("current", "current_metrics")):
        line = _metrics_line(label, outcome.get(key))
        if line:
            lines.append(line)
    lines.append(judged_line(outcome.get("current_metrics")) or "")
    if outcome.get("error"):
        lines.append(f"error: {outcome['error']}")
    return "\n".join(line for line in lines if line)


def format_run(run: dict[str, Any], brief: bool = False) -> str:
    """One run for admins: what happened, when, why, and the numbers behind it."""
    started = run["started_at"].astimezone().strftime("%Y-%m-%d %H:%M")
    head = f"Run #{run['id']} ({run['trigger']}, {started}): {run['status']}"
    lines = [head, run.get("decision") or ""]
    if not brief:
        for label, key in (("candidate", "candidate_metrics"), ("current", "current_metrics")):
            line = _metrics_line(label, run.get(key))
            if line:
                lines.append(line)
        lines.append(judged_line(run.get("current_metrics")) or "")
    elif run.get("candidate_metrics") and run.get("current_metrics"):
        cand, cur = run["candidate_metrics"].get("loss"), run["current_metrics"].get("loss")
        if cand is not None and cur is not None:
            lines.append(f"loss: candidate {cand:.4f} vs current {cur:.4f}")
    if run.get("error"):
        lines.append(f"error: {run['error']}")
    return "\n".join(line for line in lines if line)
