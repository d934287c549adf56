"""``/guess``: real or bot? The friends judge the model, and the votes are kept as a measure.

A round shows a short excerpt of the chat's stored history and one more line signed by a
friend: either what that friend really said next, or the model's reply to the same context in
that friend's voice (bot.service.FriendBot.reply_to_context), 50/50 from a seed recorded with
the round. Members vote *Real* / *Bot* on an inline keyboard, once each; after GUESS_VOTES
votes or GUESS_TIMEOUT seconds the answer and the score are revealed. The votes give each
model a *fool rate* (bot lines voted real) beside the rate at which real lines are voted real
(storage.judge), shown by ``/guessstats``, ``friendbot judge-report`` and ``friendbot runs``.

What may appear in a round: only messages of the chat asking, never the bot's own posts or
other bots', never an opted-out member's, and nothing newer than GUESS_MIN_AGE days (no
spoilers of a live conversation). When the stored history has no such excerpt (a new bot, a
fresh ``friendbot chat``), the round comes from the training data instead: a held-out row of
the served model's test split, under the same rules (bot.guess_dataset). A round is stored
before it is posted, so a restarted bot still reveals it when its time is up.

:class:`GuessGame` is the game without Telegram (the terminal chat plays it too); the
Telegram side (:func:`install`) is the command, the keyboard's callback queries and the
timeout jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.constants import ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    filters,
)

from bot.guess_dataset import (
    HeldOutExcerpt,
    HeldOutSplit,
    Unavailable,
    load_held_out,
    pick_held_out,
)
from bot.handlers import COMMANDS_KEY, SERVICE_KEY
from bot.replies import UsageError, format_reply_html
from bot.responder import GenerationTimeout
from training.formatting import clean_text, format_turn, is_placeholder_sender

if TYPE_CHECKING:
    from bot.service import FriendBot
    from storage.judge import Judgement
    from storage.models import GuessRound, Message

log = logging.getLogger(__name__)

EXCERPT_LINES = 4  # context lines shown before the line to judge
MIN_CONTEXT = 2  # fewer than this is no conversation to judge a line against
SESSION_GAP = timedelta(hours=2)  # as training's sessions: a longer pause ends a conversation
POOL = 2000  # newest old-enough messages a round is picked from
FROM_DATASET = "from the training data, a part the model never learned from"
GAME_KEY = "guess_game"
"""``application.bot_data[GAME_KEY]``: this process's :class:`GuessGame`."""
CALLBACK = r"^guess:(\d+):(real|bot)$"
MENU = [
    BotCommand("guess", "Real or bot? Guess who really said it"),
    BotCommand("guessstats", "How often the bot fools us"),
]


class Refused(UsageError):
    """A round cannot start (or a vote cannot count); the message is the member's answer."""


@dataclass(frozen=True)
class Where:
    """The chat a round is started in, as far as the game needs to know it."""

    title: str | None = None
    kind: str = "group"
    # the terminal is no Telegram chat: it plays the training data's chat when there is one
    stand_in: bool = False


# --- picking an excerpt (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Excerpt:
    """Context messages (oldest first) and the real next message of a friend."""

    context: tuple[Message, ...]
    target: Message


def pick_excerpt(
    messages: Sequence[Message],
    blocked_ids: set[int],
    bot_ids: set[int],
    rng: random.Random,
    size: int = EXCERPT_LINES,
) -> Excerpt | None:
    """A random stretch of one conversation: up to ``size`` lines and the friend's next line.

    ``messages`` are one chat's, oldest first, already old enough. Every line shown must be a
    person's (not the bot's post, not another bot's, not an opted-out member's: ``blocked_ids``)
    and the stretch never crosses such a line or a pause of SESSION_GAP; the line to judge is
    a friend's (a member with an id, not a deleted account or a chat posting as itself).
    """

    def shown(m: Message) -> bool:
        if m.from_bot or m.sender_id in bot_ids or m.sender_id in blocked_ids:
            return False
        return bool(clean_text(m.text))

    choices: list[Excerpt] = []
    run: list[Message] = []  # the current stretch of showable, unbroken lines
    for m in messages:
        if not shown(m) or (run and m.date - run[-1].date > SESSION_GAP):
            run = [m] if shown(m) else []
            continue
        friend = m.sender_id is not None and not is_placeholder_sender(m.sender_name, m.sender_id)
        if friend and len(run) >= MIN_CONTEXT:
            choices.append(Excerpt(tuple(run[-size:]), m))
        run.append(m)
    return rng.choice(choices) if choices else None


@dataclass(frozen=True)
class Chosen:
    """A round's excerpt and real line, wherever they came from, and how to record them."""

    lines: tuple[tuple[str, str], ...]  # (speaker, text) of the excerpt, oldest first
    friend: str
    friend_id: int | None
    real_line: str
    excerpt_ids: list[int] | dict[str, Any]  # message ids, or a storage.judge.dataset_ref
    real_message_id: int | None
    from_dataset: bool = False

    @classmethod
    def of_history(cls, excerpt: Excerpt) -> Chosen:
        return cls(
            lines=tuple((m.sender_name, clean_text(m.text)) for m in excerpt.context),
            friend=excerpt.target.sender_name,
            friend_id=excerpt.target.sender_id,
            real_line=clean_text(excerpt.target.text),
            excerpt_ids=[m.message_id for m in excerpt.context],
            real_message_id=excerpt.target.message_id,
        )

    @classmethod
    def of_dataset(cls, excerpt: HeldOutExcerpt, split: HeldOutSplit) -> Chosen:
        from storage.judge import dataset_ref

        speakers = [speaker for speaker, _ in excerpt.lines]
        ref = dataset_ref(
            str(split.file), excerpt.row, split.fingerprint, speakers, excerpt.message_id
        )
        return cls(
            lines=excerpt.lines,
            friend=excerpt.friend,
            friend_id=excerpt.friend_id,
            real_line=excerpt.line,
            excerpt_ids=ref,
            real_message_id=None,
            from_dataset=True,
        )


# --- the game --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundView:
    """A started round as shown: what to post, and when it is revealed at the latest."""

    round_id: int
    lines: tuple[tuple[str, str], ...]  # (speaker, text) of the excerpt
    friend: str
    line: str  # the line to judge, signed by ``friend``
    votes_needed: int
    deadline: datetime
    from_dataset: bool = False

    def html(self) -> str:
        shown = "\n".join(
            f"<i>{html.escape(speaker)}</i>: {html.escape(text)}" for speaker, text in self.lines
        )
        minutes = max(1, round((self.deadline - datetime.now(UTC)).total_seconds() / 60))
        source = f" <i>({FROM_DATASET})</i>" if self.from_dataset else ""
        return (
            f"🎭 <b>Real or bot?</b>{source}\n"
            f"{shown}\n"
            f"{format_reply_html(self.friend, self.line)}\n\n"
            f"Did {html.escape(self.friend)} really say that? Vote below: revealed after "
            f"{self.votes_needed} vote{'s' if self.votes_needed != 1 else ''} or in "
            f"{minutes} min."
        )

    def text(self) -> str:
        """Plain text, for the terminal."""
        shown = "\n".join(f"  {format_turn(s, t)}" for s, t in self.lines)
        source = f" ({FROM_DATASET})" if self.from_dataset else ""
        return f"Real or bot?{source}\n{shown}\n> {format_turn(self.friend, self.line)}"


@dataclass(frozen=True)
class Reveal:
    """The answer and the score of a closed round."""

    round_id: int
    chat_id: int
    posted_message_id: int | None
    friend: str
    is_bot: bool
    model: str
    real_votes: int
    bot_votes: int

    def text(self) -> str:
        answer = (
            f"It was the bot ({self.model}) writing as {self.friend}."
            if self.is_bot
            else f"It was real: {self.friend} said that."
        )
        total = self.real_votes + self.bot_votes
        if not total:
            return f"Revealed: {answer} Nobody voted."
        right = self.bot_votes if self.is_bot else self.real_votes
        score = f"{right} of {total} guessed right"
        if self.is_bot and self.real_votes:
            score += f"; the bot fooled {self.real_votes}"
        return (
            f"Revealed: {answer}\nVotes: {self.real_votes} × Real, {self.bot_votes} × Bot: {score}."
        )


class GuessGame:
    """Rounds, votes and reveals over a FriendBot's storage and model; no Telegram here."""

    def __init__(self, service: FriendBot) -> None:
        self.service = service
        seed = service.settings.generation_seed
        self._seeds: random.Random = (
            random.Random(seed) if seed is not None else random.SystemRandom()
        )
        self._starting: set[int] = set()  # chats whose round is being made right now
        # the served model's held-out split, read once per model directory (or why there is none)
        self._held_out: dict[str, HeldOutSplit | Unavailable] = {}

    async def start(
        self, chat_id: int, *, cooldown: bool = True, where: Where | None = None
    ) -> RoundView:
        """Make, store and return a new round for ``chat_id``; :class:`Refused` says why not.

        The round is stored before it is shown, so its timeout survives a restart; call
        :meth:`posted` once it is on screen, :meth:`discard` if it could not be posted.
        ``where`` describes the chat (a round from the training data may be the first thing
        stored for it) and, for the terminal, which chat of the training data it plays.
        """
        if chat_id in self._starting:
            raise Refused("A round is being prepared already.")
        self._starting.add(chat_id)
        try:
            return await self._start(chat_id, cooldown, where or Where())
        finally:
            self._starting.discard(chat_id)

    async def _start(self, chat_id: int, cooldown: bool, where: Where) -> RoundView:
        settings = self.service.settings
        now = datetime.now(UTC)
        seed = self._seeds.randrange(2**31)
        rng = random.Random(seed)
        chosen = await asyncio.to_thread(self._pick, chat_id, now, cooldown, rng, where)
        is_bot = rng.random() < 0.5
        if is_bot:
            context = [format_turn(s, t) for s, t in chosen.lines]
            try:
                reply = await self.service.reply_to_context(context, chosen.friend)
            except GenerationTimeout:
                raise Refused("That took too long. Try /guess again in a moment.") from None
            if reply is None:
                raise Refused("I couldn't come up with a line this time. Try /guess again.")
            line = reply.text
        else:
            line = chosen.real_line
        deadline = now + timedelta(seconds=settings.guess_timeout)
        round_id = await asyncio.to_thread(
            self._record, chat_id, chosen, is_bot, seed, now, deadline, where
        )
        return RoundView(
            round_id,
            chosen.lines,
            chosen.friend,
            line,
            settings.guess_votes,
            deadline,
            from_dataset=chosen.from_dataset,
        )

    def _pick(
        self, chat_id: int, now: datetime, cooldown: bool, rng: random.Random, where: Where
    ) -> Chosen:
        """The stored history's excerpt; the training data's only when history has none."""
        from storage.history import bot_member_ids, opted_out_members
        from storage.judge import excerpt_pool, last_started, open_round_in

        settings = self.service.settings
        self.service._flush()
        cutoff = now - timedelta(days=settings.guess_min_age)
        with self.service.sessions.begin() as session:
            if open_round_in(session, chat_id) is not None:
                raise Refused("A round is still open here: vote on it first.")
            last = last_started(session, chat_id)
            wait = settings.guess_cooldown - (now - last).total_seconds() if last else 0
            if cooldown and wait > 0:
                raise Refused(f"One round at a time: the next /guess in {_duration(wait)}.")
            pool = excerpt_pool(session, chat_id, cutoff, POOL)
            members = opted_out_members(session)
            opted_out = {m.user_id: (m.display_name, m.username) for m in members}
            bots = bot_member_ids(session)
        excerpt = pick_excerpt(pool, set(opted_out), bots, rng)
        if excerpt is not None:
            return Chosen.of_history(excerpt)
        no_history = (
            "Not enough history to play yet: I need a conversation older than "
            f"{settings.guess_min_age:g} days (newer ones are skipped, no spoilers)"
        )
        split = self._split()
        if isinstance(split, Unavailable):
            raise Refused(f"{no_history}, and {split}.")
        data_chat = chat_id
        if where.stand_in:
            chats = split.chats()
            if len(chats) != 1:
                raise Refused(
                    f"{no_history}, and the training data holds {len(chats)} chats: start "
                    "`friendbot chat --chat-id ID` with the id of the one to play."
                )
            (data_chat,) = chats
        names = [name for pair in opted_out.values() for name in pair if name]
        held_out = pick_held_out(
            split,
            data_chat,
            blocked_names=names,
            blocked_ids=set(opted_out),
            bot_ids=bots,
            before=cutoff,
            rng=rng,
            size=EXCERPT_LINES,
            min_context=MIN_CONTEXT,
        )
        if held_out is None:
            raise Refused(f"{no_history}, and the training data has no excerpt of this chat.")
        return Chosen.of_dataset(held_out, split)

    def _split(self) -> HeldOutSplit | Unavailable:
        """The served model's held-out split (cached per model directory), or why not."""
        model_id = self.service.model_id()
        if model_id not in self._held_out:
            try:
                self._held_out[model_id] = load_held_out(self.service.models.current.chat.info)
            except Unavailable as why:
                log.info("/guess: no training-data fallback for %s: %s", model_id, why)
                self._held_out[model_id] = why
        return self._held_out[model_id]

    def _record(
        self,
        chat_id: int,
        chosen: Chosen,
        is_bot: bool,
        seed: int,
        now: datetime,
        deadline: datetime,
        where: Where,
    ) -> int:
        from storage.history import get_chat, upsert_chat
        from storage.judge import start_round

        with self.service.sessions.begin() as session:
            if get_chat(session, chat_id) is None:  # commands are not stored: a new chat's first
                upsert_chat(session, chat_id, where.title, where.kind)
            row = start_round(
                session,
                chat_id=chat_id,
                model_id=self.service.model_id(),
                friend=chosen.friend,
                friend_id=chosen.friend_id,
                is_bot=is_bot,
                seed=seed,
                excerpt_ids=chosen.excerpt_ids,
                real_message_id=chosen.real_message_id,
                votes_needed=self.service.settings.guess_votes,
                deadline_at=deadline,
                started_at=now,
            )
            return row.id

    async def posted(self, round_id: int, message_id: int) -> None:
        """The round is on screen as ``message_id``."""
        from storage.judge import set_posted

        def work() -> None:
            with self.service.sessions.begin() as session:
                set_posted(session, round_id, message_id)

        await asyncio.to_thread(work)

    async def discard(self, round_id: int) -> None:
        """Forget a round that never reached the chat (nobody could vote on it)."""
        from storage.judge import discard_round

        def work() -> None:
            with self.service.sessions.begin() as session:
                discard_round(session, round_id)

        await asyncio.to_thread(work)

    async def vote(self, round_id: int, chat_id: int, voter_id: int, real: bool) -> bool:
        """Count a member's vote; True when it completes the round (reveal it now).

        :class:`Refused` for a second vote, a closed or unknown round, an opted-out member.
        """
        if self.service.is_opted_out(voter_id):
            raise Refused("You opted out, so I don't record your votes.")

        def work() -> bool:
            from storage.judge import add_vote, get_round, vote_counts

            with self.service.sessions.begin() as session:
                row = get_round(session, round_id)
                if row is None or row.chat_id != chat_id:
                    raise Refused("That round is gone.")
                if row.revealed_at is not None:
                    raise Refused("This round is over.")
                if not add_vote(session, round_id, voter_id, real):
                    raise Refused("You already voted in this round.")
                real_votes, bot_votes = vote_counts(session, round_id)
                return real_votes + bot_votes >= row.votes_needed

        return await asyncio.to_thread(work)

    async def reveal(self, round_id: int) -> Reveal | None:
        """Close the round and say how it went; None if it was revealed already (or is gone)."""

        def work() -> Reveal | None:
            from storage.judge import close_round, get_round, vote_counts

            with self.service.sessions.begin() as session:
                if not close_round(session, round_id):
                    return None
                row = get_round(session, round_id)
                assert row is not None
                real_votes, bot_votes = vote_counts(session, round_id)
                return Reveal(
                    round_id=row.id,
                    chat_id=row.chat_id,
                    posted_message_id=row.posted_message_id,
                    friend=row.friend,
                    is_bot=row.is_bot,
                    model=Path(row.model_id).name,
                    real_votes=real_votes,
                    bot_votes=bot_votes,
                )

        return await asyncio.to_thread(work)

    async def open_rounds(self) -> list[GuessRound]:
        """Rounds waiting for their reveal (a restarted bot schedules their timeouts)."""
        from storage.judge import open_rounds

        def work() -> list[GuessRound]:
            with self.service.sessions.begin() as session:
                return open_rounds(session)

        return await asyncio.to_thread(work)

    async def stats(self, chat_id: int) -> str:
        """``/guessstats``: the fool rate per model and per friend in this chat."""
        from storage.judge import judgements

        def work() -> tuple[list[Judgement], list[Judgement]]:
            with self.service.sessions.begin() as session:
                return (
                    judgements(session, "model", chat_id=chat_id),
                    judgements(session, "friend", chat_id=chat_id),
                )

        by_model, by_friend = await asyncio.to_thread(work)
        return report_text(by_model, by_friend, "in this chat")


# --- words -----------------------------------------------------------------------------------


def report_text(by_model: list[Judgement], by_friend: list[Judgement], where: str = "") -> str:
    """The fool rate per model and per friend beside the real-voted-real rate, as lines."""
    rounds = sum(j.rounds for j in by_model)
    if not rounds:
        return f"No /guess round revealed {where} yet.".replace("  ", " ")
    votes = sum(j.fooled.votes + j.real_as_real.votes for j in by_model)
    lines = [
        f"Real or bot? {rounds} round{'s' if rounds != 1 else ''}, {votes} votes {where}.".replace(
            " .", "."
        ),
        "Fool rate = bot lines voted Real; a perfect imitation scores as real lines do.",
        "Per model:",
    ]
    lines += [f"  {judgement_line(j, Path(j.key).name)}" for j in by_model]
    lines.append("Per friend:")
    lines += [f"  {judgement_line(j, j.key)}" for j in by_friend]
    return "\n".join(lines)


def judgement_line(judgement: Judgement, name: str) -> str:
    return f"{name}: {judgement.summary()}"


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{round(seconds / 60)} min"


# --- Telegram --------------------------------------------------------------------------------


def install(application: Application) -> None:
    """``/guess``, ``/guessstats``, the vote buttons, and the timeouts of stored rounds."""
    service: FriendBot = application.bot_data[SERVICE_KEY]
    application.bot_data[GAME_KEY] = GuessGame(service)
    allowed = filters.Chat(chat_id=service.settings.allowed_chat_ids) & filters.UpdateType.MESSAGE
    # group 1: beside the core handlers (group 0), none of which takes a command it lacks
    application.add_handler(
        CommandHandler("guess", guess_command, filters=allowed, block=False), group=1
    )
    application.add_handler(
        CommandHandler("guessstats", guessstats_command, filters=allowed), group=1
    )
    application.add_handler(CallbackQueryHandler(vote_button, pattern=CALLBACK), group=-1)
    application.bot_data.setdefault(COMMANDS_KEY, []).extend(MENU)
    if application.job_queue is None:
        raise RuntimeError("/guess needs PTB's JobQueue (APScheduler installed)")
    # after start-up (the database is upgraded by then): rounds a stopped bot left open
    application.job_queue.run_once(resume_rounds, when=0, name="guess-resume")


def game_of(context: ContextTypes.DEFAULT_TYPE) -> GuessGame:
    return context.application.bot_data[GAME_KEY]


def keyboard(round_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton("Real", callback_data=f"guess:{round_id}:real"),
          InlineKeyboardButton("Bot", callback_data=f"guess:{round_id}:bot")]]
    )  # fmt: skip


async def guess_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Start a round: post the excerpt and the line with the Real / Bot keyboard."""
    msg = update.effective_message
    game = game_of(context)
    try:
        view = await game.start(msg.chat_id, where=Where(msg.chat.title, msg.chat.type))
    except Refused as exc:
        await msg.reply_text(str(exc))
        return
    try:
        sent = await context.bot.send_message(
            msg.chat_id,
            view.html(),
            parse_mode=ParseMode.HTML,
            reply_markup=keyboard(view.round_id),
        )
    except TelegramError:
        await game.discard(view.round_id)
        raise
    await game.posted(view.round_id, sent.message_id)
    schedule_timeout(context.application, view.round_id, view.deadline)


async def guessstats_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The fool rate per model and per friend in this chat, with 95% intervals."""
    msg = update.effective_message
    await msg.reply_text(await game_of(context).stats(msg.chat_id))


async def vote_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A *Real* / *Bot* press: count it (once per member), reveal when enough have voted."""
    query = update.callback_query
    service: FriendBot = context.application.bot_data[SERVICE_KEY]
    if query is None or query.message is None or not service.is_allowed(query.message.chat.id):
        return
    round_id, choice = query.data.split(":")[1:]
    real = choice == "real"
    try:
        complete = await game_of(context).vote(
            int(round_id), query.message.chat.id, query.from_user.id, real
        )
    except Refused as exc:
        await query.answer(str(exc))
        return
    await query.answer(f"Counted: {'Real' if real else 'Bot'}.")
    if complete:
        await reveal(context.application, int(round_id))


def schedule_timeout(application: Application, round_id: int, deadline: datetime) -> None:
    """Reveal the round at ``deadline`` whatever the votes (a job; re-made at every start)."""
    assert application.job_queue is not None
    when = max(deadline, datetime.now(UTC) + timedelta(seconds=0.1))
    application.job_queue.run_once(timeout_job, when=when, data=round_id, name=f"guess-{round_id}")


async def timeout_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    await reveal(context.application, int(context.job.data))  # type: ignore[union-attr, arg-type]


async def resume_rounds(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Schedule the timeouts of rounds stored as open (the bot stopped during them)."""
    rounds = await game_of(context).open_rounds()
    for row in rounds:
        schedule_timeout(context.application, row.id, row.deadline_at)
    if rounds:
        log.info("/guess: %d open round(s) resumed", len(rounds))


async def reveal(application: Application, round_id: int) -> None:
    """Close the round (once), take its keyboard away and post the answer under it."""
    game: GuessGame = application.bot_data[GAME_KEY]
    outcome = await game.reveal(round_id)
    if outcome is None:
        return
    if application.job_queue is not None:
        for job in application.job_queue.get_jobs_by_name(f"guess-{round_id}"):
            job.schedule_removal()
    posted = outcome.posted_message_id
    if posted is not None:
        with contextlib.suppress(TelegramError):  # an old message may not be editable
            await application.bot.edit_message_reply_markup(outcome.chat_id, posted)
    await application.bot.send_message(
        outcome.chat_id,
        outcome.text(),
        reply_parameters=(
            ReplyParameters(posted, allow_sending_without_reply=True) if posted else None
        ),
    )
