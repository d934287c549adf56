"""What the bot does, independent of Telegram: store, decide, generate, manage members.

The Telegram handlers (bot/handlers.py) and the terminal chat (bot/local_chat.py) are two thin
front ends over one ``FriendBot``, so ``friendbot chat`` exercises exactly the storage, policy
and generation path the real bot uses.

Threads: the event loop only queues messages (``MessageWriter.submit``) and makes decisions;
database reads and writes that must finish before an answer run via ``asyncio.to_thread``, and
generation runs on the responder's worker threads with a time limit.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.best_of import Scorer, best_of, score_candidate
from bot.memory import (
    RECALL_USAGE,
    Memory,
    Recollection,
    Window,
    memory_spec,
    recall,
    recall_prompt,
    recall_teller,
)
from bot.model_scorers import next_speaker_for
from bot.policy import Decision, Incoming, ReplyPolicy
from bot.replies import (
    SHRUG,
    Friends,
    Reply,
    ReplyOrigin,
    UsageError,
    as_prompt,
    choose_reply,
    clean_paraphrases,
    context_lines,
    joke_prompt,
    limit_input,
    paraphrase_prompt,
    persona_reply,
    split_as_args,
)
from bot.responder import Responder
from bot.serving import ModelHolder, ServedModels, load_models
from training.formatting import build_prompt, is_placeholder_sender
from training.model.decoding import DecodeOptions

if TYPE_CHECKING:
    from bot.engine import ReplyEngine
    from bot.settings import Settings
    from storage.search import FoundMessage
    from storage.writer import MessageRecord

log = logging.getLogger(__name__)

FRIENDS_WINDOW = 200  # recent messages whose senders count as friends the bot may speak as
CANDIDATES = 3  # task-model outputs sampled at once (chat replies: REPLY_CANDIDATES)
FLUSH_TIMEOUT_S = 10.0

PARAPHRASE_USAGE = "Usage: /paraphrase TEXT (or reply to a message with /paraphrase)"
JOKE_USAGE = "Usage: /joke [TOPIC]"


class FriendBot:
    """Storage, reply policy, models and the responder, put together once per process."""

    def __init__(
        self,
        settings: Settings,
        *,
        loader: Callable[[ServedModels | None], ServedModels] | None = None,
        clock: Callable[[], float] = time.monotonic,
        scorer: Scorer = score_candidate,
    ) -> None:
        """``loader`` replaces :func:`load_models` (tests serve scripted models through it);
        ``scorer`` orders the REPLY_CANDIDATES chat replies (bot.best_of)."""
        from storage.db import make_engine, session_factory
        from storage.writer import MessageWriter

        self.settings = settings
        self.scorer = scorer
        self.db = make_engine(settings.database_url)
        self.sessions = session_factory(self.db)
        self.writer = MessageWriter(self.sessions)
        self.models = ModelHolder(loader or (lambda previous: load_models(settings, previous)))
        self.responder = Responder(settings.generation_workers, settings.generation_timeout)
        seed = settings.generation_seed
        self.policy = ReplyPolicy(
            settings.reply_probability,
            settings.reply_cooldown,
            rng=random.Random(seed),
            clock=clock,
        )
        self.rng = random.Random(seed)  # which friend speaks when the model names nobody usable
        self._seeds = random.Random(seed) if seed is not None else None
        self._opted_out: dict[int, tuple[str, ...]] = {}  # user id -> their names
        self._muted: set[int] = set()
        self.started = False

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, *, load_models: bool = True) -> None:
        """Upgrade the schema, start the writer, load member/chat flags and the models.

        Blocking (seconds, for the models): the app runs it in a thread before polling starts.
        """
        from storage.db import upgrade

        upgrade(self.db)
        self.writer.start()
        self._load_flags()
        self.prune()
        if load_models:
            self.models.load()
        self.started = True

    def stop(self) -> None:
        """Commit everything queued, stop the workers, close database connections."""
        self.writer.close()
        self.responder.shutdown()
        self.db.dispose()
        self.started = False

    def prune(self) -> int:
        """Apply the retention settings (at start, then daily); returns messages deleted.

        Also forgets inbox rows of updates handled long ago (storage.inbox).
        """
        from storage.history import prune_messages
        from storage.inbox import prune_processed

        with self.sessions.begin() as session:
            prune_processed(session)
        s = self.settings
        if s.history_retention_days is None and s.history_keep_per_chat is None:
            return 0
        older_than = (
            datetime.now(UTC) - timedelta(days=s.history_retention_days)
            if s.history_retention_days
            else None
        )
        with self.sessions.begin() as session:
            deleted = prune_messages(
                session, keep_per_chat=s.history_keep_per_chat, older_than=older_than
            )
        if deleted:
            log.info("retention: deleted %d old messages", deleted)
        return deleted

    def _load_flags(self) -> None:
        from storage.history import muted_chat_ids, opted_out_members

        with self.sessions.begin() as session:
            members = opted_out_members(session)
            self._opted_out = {m.user_id: _names(m.display_name, m.username) for m in members}
            self._muted = muted_chat_ids(session)

    # --- the inbox of fetched Telegram updates (bot/inbox.py) ---------------------------------

    def store_fetched(self, bot_id: int, updates: list[dict[str, Any]]) -> set[int]:
        """Store fetched updates durably before Telegram is told to forget them; returns the
        ids still to handle (the others were handled already: a re-delivery)."""
        from storage.db import durable_session
        from storage.inbox import save_fetched

        with durable_session(self.db) as session:
            return save_fetched(session, bot_id, updates)

    def unhandled_updates(self, bot_id: int) -> list[dict[str, Any]]:
        """Updates stored but not handled before the last stop, oldest first."""
        from storage.inbox import pending_updates

        with self.sessions.begin() as session:
            return pending_updates(session, bot_id)

    def update_handled(self, bot_id: int, update_id: int) -> None:
        """The update's handlers ran: mark it handled once what it queued is committed."""
        try:
            self.writer.mark_handled(bot_id, update_id)
        except RuntimeError:  # stopping: it is handed over again at the next start
            log.debug("update %s not marked handled: the writer is closed", update_id)

    # --- who and where ------------------------------------------------------------------------

    def is_allowed(self, chat_id: int) -> bool:
        """Only chats in ALLOWED_CHAT_IDS are read, stored and answered."""
        return chat_id in self.settings.allowed_chat_ids

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.settings.admin_user_ids

    def is_muted(self, chat_id: int) -> bool:
        return chat_id in self._muted

    def is_opted_out(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self._opted_out

    # --- incoming messages --------------------------------------------------------------------

    def observe(self, message: MessageRecord, *, addressed: bool = False) -> Decision:
        """Queue ``message`` for storage (unless its sender opted out) and decide on a reply.

        ``addressed``: the message mentions the bot or replies to one of its posts. Never
        blocks: the writer thread does the database work in batches.
        """
        if not self.is_opted_out(message.sender_id):
            self.writer.submit(message)
        return self.policy.decide(
            Incoming(
                chat_id=message.chat_id,
                sender_is_bot=message.sender_is_bot,
                addressed=addressed,
                muted=self.is_muted(message.chat_id),
            )
        )

    def record_sent(
        self,
        reply: Reply,
        *,
        chat_id: int,
        message_id: int,
        bot_id: int | None,
        date: datetime | None = None,
        reply_to_message_id: int | None = None,
    ) -> None:
        """Store a post the bot made in a friend's voice, so later context includes it.

        It is flagged ``from_bot``: retraining never learns from the bot's own words.
        """
        from storage.writer import MessageRecord

        self.writer.submit(
            MessageRecord(
                chat_id=chat_id,
                message_id=message_id,
                sender_id=bot_id,
                sender_name=reply.speaker,
                text=reply.text,
                date=date or datetime.now(UTC),
                reply_to_message_id=reply_to_message_id,
                from_bot=True,
            )
        )

    async def remember_reply(self, reply: Reply, chat_id: int, message_id: int) -> None:
        """Record a posted in-character reply with what it answered, so the group's reactions
        to it can be used (bot/reactions.py, storage.feedback). No-op without an origin.

        Failing here must not look like a failed post: the message is out already.
        """
        origin = reply.origin
        if origin is None:
            return

        def work() -> None:
            from storage.feedback import record_bot_reply

            with self.sessions.begin() as session:
                record_bot_reply(
                    session,
                    chat_id=chat_id,
                    message_id=message_id,
                    persona=reply.speaker,
                    text=reply.text,
                    kind=origin.kind,
                    context_until=origin.context_until,
                    context_size=origin.context_size,
                    model=origin.model,
                )

        try:
            await asyncio.to_thread(work)
        except Exception as exc:
            log.warning("chat %s: reply %s not kept for feedback: %r", chat_id, message_id, exc)

    # --- generation ---------------------------------------------------------------------------

    async def reply_in_character(
        self, chat_id: int, asker: str | None = None, *, prompted: bool = True
    ) -> Reply | None:
        """The chat continued in character by the friend likeliest to speak next.

        With the served model's next-speaker scorer (training.model.next_speaker), that friend
        is the scorer's best candidate the bot may speak as, and the model is asked for a
        persona reply. Without it (or when it names nobody usable) the model picks the speaker
        itself, and is asked again with a persona when it picks nobody usable. None when there
        is no one to speak as, or when an unprompted reply came out empty; asked directly, a
        friend who has no words shrugs."""
        context, friends, memory, mark = await self._remember(chat_id)
        chat = self.models.current.chat
        origin = self._origin("chat", mark)
        k = self.settings.reply_candidates
        avoid = [asker] if asker else []
        persona = await asyncio.to_thread(next_speaker, chat, context, friends, avoid)
        if persona is None:
            candidates = await self._best_of(chat, memory.prompt(context), k, context)
            reply = choose_reply(candidates, friends, avoid=avoid)
            if reply is not None:
                return replace(reply, origin=origin)
            persona = friends.pick(self.rng, avoid=avoid)
        if persona is None:
            log.info("chat %s: no friend to speak as yet", chat_id)
            return None
        prompt = memory.prompt(context, persona, await memory.voice(persona))
        candidates = await self._best_of(chat, prompt, k, context, persona)
        reply = persona_reply(candidates, persona)
        if reply is None and prompted:
            reply = Reply(persona, SHRUG)
        return replace(reply, origin=origin) if reply is not None else None

    async def reply_to_context(self, context: Sequence[str], persona: str) -> Reply | None:
        """The model's line as ``persona`` after ``context`` lines, as a reply is made (best of
        REPLY_CANDIDATES): for /guess, the bot's take on the moment a friend really spoke.
        None when every candidate came out empty."""
        chat, k = self.models.current.chat, self.settings.reply_candidates
        prompt = build_prompt(list(context), persona)
        candidates = await self._best_of(chat, prompt, k, context, persona)
        return persona_reply(candidates, persona)

    def model_id(self) -> str:
        """The served chat model, as rounds, reports and feedback name it: its directory."""
        return str(self.models.current.chat.model_dir)

    async def reply_as(self, chat_id: int, args: Sequence[str], asker: str) -> Reply:
        """``/as NAME [text]``: the chat (plus ``text``, said by the asker) answered as NAME."""
        context, friends, memory, mark = await self._remember(chat_id)
        name, text = split_as_args(args, friends)
        if friends.is_blocked(name):
            raise UsageError(f"{name} opted out, so I never speak as them.")
        if text:
            text = limit_input(text, self.settings.max_input_chars, "Usage: /as NAME [text]")
        persona = friends.find(name) or name
        prompt = as_prompt(
            context, persona, asker, text, memory=memory.lines, voice=await memory.voice(persona)
        )
        chat, k = self.models.current.chat, self.settings.reply_candidates
        candidates = await self._best_of(chat, prompt, k, context, persona)
        reply = persona_reply(candidates, persona) or Reply(persona, SHRUG)
        return replace(reply, origin=None if text else self._origin("as", mark))

    async def paraphrase(self, text: str, asker: str) -> list[str]:
        """Up to three rewordings of ``text`` from the paraphrase model."""
        text = limit_input(text, self.settings.max_input_chars, PARAPHRASE_USAGE)
        task = self.models.current.paraphrase
        prompt = paraphrase_prompt(text, task.instruct, asker)
        outputs = await self._generate(task.engine, prompt, CANDIDATES + 1)
        return clean_paraphrases(outputs, text, task.instruct)

    async def joke(self, chat_id: int, topic: str, asker: str) -> Reply:
        """A joke (about ``topic``, if given) from the joke model, told by one of the friends."""
        topic_text = (
            limit_input(topic, self.settings.max_input_chars, JOKE_USAGE) if topic.strip() else None
        )
        context, friends = await self.context(chat_id)
        teller = friends.pick(self.rng, avoid=[asker])
        if teller is None:
            raise UsageError("I don't know anyone here yet who could tell it. Chat a bit first!")
        task = self.models.current.joke
        prompt = joke_prompt(topic_text, task.instruct, context, asker, teller)
        candidates = await self._generate(task.engine, prompt, CANDIDATES)
        return persona_reply(candidates, teller) or Reply(teller, SHRUG)

    async def recall(self, chat_id: int, topic: str, asker: str) -> Recollection:
        """``/recall TOPIC``: what the chat said about it (any model) and a friend's answer
        about it, in character (the found messages in its prompt only for a model trained
        with memory). Nothing found: an empty Recollection, and no generation."""
        topic = limit_input(topic, self.settings.max_input_chars, RECALL_USAGE)

        def search() -> list[FoundMessage]:
            self._flush()
            with self.sessions.begin() as session:
                return recall(session, chat_id, topic)

        found = await asyncio.to_thread(search)
        if not found:
            return Recollection(topic, [])
        context, friends, memory, _ = await self._remember(chat_id)
        persona = recall_teller(found, friends, asker) or friends.pick(self.rng, avoid=[asker])
        if persona is None:
            return Recollection(topic, found)
        given = (
            sorted(found, key=lambda m: -m.rank)[: memory.spec.memory_lines] if memory.on else []
        )
        prompt = recall_prompt(context, asker, topic, persona, given, await memory.voice(persona))
        chat, k = self.models.current.chat, self.settings.reply_candidates
        candidates = await self._best_of(chat, prompt, k, context, persona)
        return Recollection(
            topic, found, persona_reply(candidates, persona) or Reply(persona, SHRUG)
        )

    async def context(self, chat_id: int) -> tuple[list[str], Friends]:
        """The chat's recent lines (as in training) and the friends the bot may speak as."""
        lines, friends, _, _ = await asyncio.to_thread(self._read_context, chat_id, False)
        return lines, friends

    def _origin(self, kind: str, mark: tuple[int | None, int]) -> ReplyOrigin:
        """Where a reply came from (for the group's feedback on it, bot/reactions.py)."""
        return ReplyOrigin(kind, mark[0], mark[1], self.model_id())

    async def _remember(
        self, chat_id: int
    ) -> tuple[list[str], Friends, Memory, tuple[int | None, int]]:
        """As :meth:`context`, plus the long memory of that very window (bot.memory) when the
        served model was trained with it, and the mark of what a reply answers."""
        return await asyncio.to_thread(self._read_context, chat_id, True)

    def _read_context(
        self, chat_id: int, remember: bool
    ) -> tuple[list[str], Friends, Memory, tuple[int | None, int]]:
        """The context lines, the friends, the memory (when ``remember``) and the mark
        (newest context message id, messages read): what a reply answered, recorded with it
        so feedback can rebuild its training example."""
        from storage.history import bot_member_ids, recent_messages

        self._flush()  # the message being answered may still be in the writer's queue
        window = max(self.settings.history_size, FRIENDS_WINDOW)
        with self.sessions.begin() as session:
            recent = recent_messages(session, chat_id, window)
            bots = bot_member_ids(session)
        window = recent[-self.settings.history_size :]
        lines = context_lines(window)
        mark = (window[-1].message_id if window else None, len(window))
        # people only: no other bots, no chat posting as itself (a negative sender id)
        names = [
            m.sender_name
            for m in recent
            if (m.from_bot or m.sender_id not in bots)
            and not is_placeholder_sender(m.sender_name, m.sender_id)
        ]
        if self.models.loaded:
            names += [str(n) for n in self.models.current.chat.info.get("speakers") or []]
        blocked = [name for names_ in self._opted_out.values() for name in names_]
        memory = Memory.off()
        if remember and self.settings.long_memory and self.models.loaded:
            spec = memory_spec(self.models.current.chat.info)
            memory = Memory.read(self.sessions, spec, Window.of(chat_id, window, recent))
        return lines, Friends.build(names, blocked), memory, mark

    async def _best_of(
        self,
        engine: ReplyEngine,
        prompt: str,
        k: int,
        context: Sequence[str],
        persona: str | None = None,
    ) -> list[str]:
        """``k`` chat replies, best-scored first (bot.best_of); ``k=1`` is one plain sample."""
        if k == 1:
            return await self._generate(engine, prompt, 1)
        s = self.settings
        options = DecodeOptions(
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            top_p=s.top_p,
            num_return_sequences=k,
            seed=self._seeds.randrange(2**31) if self._seeds is not None else None,
            no_repeat_ngram_size=s.no_repeat_ngram_size,
            repetition_penalty=s.repetition_penalty,
        )

        def work() -> list[str]:
            ranked = best_of(engine, prompt, options, context, persona, self.scorer)
            if not any(text.strip() for text in ranked):  # as _generate: beams instead
                return engine.generate(
                    [prompt],
                    max_new_tokens=s.max_new_tokens,
                    sample=False,
                    num_return_sequences=k,
                    no_repeat_ngram_size=s.no_repeat_ngram_size,
                    repetition_penalty=s.repetition_penalty,
                )[0]
            return ranked

        return await self.responder.run(work)

    async def _generate(self, engine: ReplyEngine, prompt: str, n: int) -> list[str]:
        """``n`` outputs for ``prompt`` on a worker thread, within the time limit.

        Sampled first (varied replies). If every sample comes out empty (the model ended at
        once), the ``n`` best beams are asked for instead: beams are distinct by construction
        and rarely all empty.
        """
        s = self.settings
        seed = self._seeds.randrange(2**31) if self._seeds is not None else None
        guards = {
            "no_repeat_ngram_size": s.no_repeat_ngram_size,
            "repetition_penalty": s.repetition_penalty,
        }

        def work() -> list[str]:
            outputs = engine.generate(
                [prompt],
                max_new_tokens=s.max_new_tokens,
                sample=True,
                temperature=s.temperature,
                top_p=s.top_p,
                num_return_sequences=n,
                seed=seed,
                **guards,
            )[0]
            if any(o.strip() for o in outputs):
                return outputs
            return engine.generate(
                [prompt],
                max_new_tokens=s.max_new_tokens,
                sample=False,
                num_return_sequences=n,
                **guards,
            )[0]

        return await self.responder.run(work)

    # --- members and admin --------------------------------------------------------------------

    async def opt_out(self, user_id: int, display_name: str, username: str | None) -> int:
        """Never store or imitate this member again; delete what is stored. Returns rows deleted."""
        self._opted_out[user_id] = _names(display_name, username)  # before anything else

        def work() -> int:
            from storage import judge
            from storage.history import forget_member, set_opted_out, upsert_member

            self._flush()
            with self.sessions.begin() as session:
                upsert_member(session, user_id, display_name, username)
                set_opted_out(session, user_id, True)
                # their /guess votes and rounds (by name too: rounds from the training data)
                judge.forget_member(session, user_id, _names(display_name, username))
                return forget_member(session, user_id)

        return await asyncio.to_thread(work)

    async def opt_in(self, user_id: int, display_name: str, username: str | None) -> None:
        """Store and imitate this member again from now on."""

        def work() -> None:
            from storage.history import set_opted_out, upsert_member

            with self.sessions.begin() as session:
                upsert_member(session, user_id, display_name, username)
                set_opted_out(session, user_id, False)

        await asyncio.to_thread(work)
        self._opted_out.pop(user_id, None)

    async def set_muted(self, chat_id: int, muted: bool) -> None:
        """Mute (no replies, messages still stored) or unmute a chat; survives restarts."""

        def work() -> None:
            from storage.history import set_chat_flags

            with self.sessions.begin() as session:
                set_chat_flags(session, chat_id, muted=muted)

        await asyncio.to_thread(work)
        if muted:
            self._muted.add(chat_id)
        else:
            self._muted.discard(chat_id)

    async def forget(self, chat_id: int) -> int:
        """Delete the chat's stored history (flags kept); returns rows deleted."""

        def work() -> int:
            from storage.history import forget_chat

            self._flush()
            with self.sessions.begin() as session:
                return forget_chat(session, chat_id)

        deleted = await asyncio.to_thread(work)
        self.policy.forget(chat_id)
        return deleted

    async def stats(self, chat_id: int) -> dict[str, object]:
        """What is stored for the chat, plus the models and queues of this process."""

        def work() -> dict[str, object]:
            from storage.history import chat_stats

            self._flush()
            with self.sessions.begin() as session:
                return dict(chat_stats(session, chat_id))

        stats = await asyncio.to_thread(work)
        stats["muted"] = self.is_muted(chat_id)
        stats["opted_out_members"] = len(self._opted_out)
        stats["generations_in_flight"] = self.responder.in_flight
        stats["models"] = self.models.current.describe() if self.models.loaded else "not loaded"
        return stats

    async def reload(self) -> ServedModels:
        """Load the models again (MODEL_DIR re-resolved) and swap them in between replies.

        The hook for retraining: a watcher that sees a newly promoted ``models/current``
        calls this, exactly as an admin's /reload does.
        """
        models = await self.models.reload()
        log.info("models reloaded (%d so far)", self.models.reloads)
        return models

    def _flush(self) -> None:
        try:
            self.writer.flush(timeout=FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.warning("writer is behind; answering from what is committed so far")


def next_speaker(
    chat: ReplyEngine, context: Sequence[str], friends: Friends, avoid: Sequence[str]
) -> str | None:
    """The friend the served model's next-speaker scorer ranks first among those the bot may
    speak as (known, not opted out, not in ``avoid``), spelled as the chat knows them; None
    without a scorer or when it ranks nobody usable (then the model picks, as before)."""
    scorer = next_speaker_for(getattr(chat, "model_dir", None))
    if scorer is None:
        return None
    name = scorer.pick(context, allowed=friends.known, avoid=avoid)
    return friends.find(name) if name is not None else None


def _names(display_name: str, username: str | None) -> tuple[str, ...]:
    return (display_name, username) if username else (display_name,)
