"""``friendbot chat``: the bot in a terminal, with the same models, storage and replies.

Type a line to say it as yourself, or ``Name: text`` to say it as a friend (to set a scene).
Every line is stored like a group message and answered in a friend's voice, exactly as the
Telegram bot answers a mention. Commands work as in Telegram (you are an admin here):
``/paraphrase``, ``/joke``, ``/as``, ``/stats``, ``/forget``, ``/mute``, ``/reload``, ...
``/quit``, ``exit`` or end of input (Ctrl-D) leaves.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from bot.guess import GuessGame, Refused, Where
from bot.replies import Reply, UsageError
from bot.responder import GenerationTimeout
from bot.service import FriendBot
from bot.settings import Settings
from storage.writer import MessageRecord
from training.errors import InputError

log = logging.getLogger(__name__)

LOCAL_CHAT_ID = -1
"""The terminal chat's id in the database (no Telegram chat has it)."""
LOCAL_USER_ID = 0
"""Your user id in the terminal chat (no Telegram user has it)."""
CHAT_TITLE, CHAT_TYPE = "friendbot chat", "local"  # how the terminal chat is stored
QUIT = frozenset({"/quit", "/exit", "quit", "exit"})
MAX_NAME_WORDS = 3  # "Name: text" speaks as Name only for a short name, so "note: x" rarely trips

HELP = """Type to talk as yourself, or `Name: text` to talk as a friend.
/paraphrase TEXT   say it differently
/joke [TOPIC]      one of the friends tells a joke
/as NAME [text]    answer as NAME
/recall TOPIC      what was said about it, and when
/optout, /optin    stop / resume storing and imitating you
/stats, /forget    what is stored here / delete it
/mute, /unmute     stop / resume replies (lines are still stored)
/guess             real or bot? a friend's line (stored history or training data) or the bot's
/guessstats        how often the bot fooled you, per model and per friend
/reload            load the newest model
/quit              leave (or Ctrl-D)"""

ReadLine = Callable[[], Awaitable[str | None]]
Show = Callable[[str | None, str], None]  # (speaker or None for the bot's own notes, text)


class LocalChat:
    """One terminal conversation over a started FriendBot."""

    def __init__(
        self, service: FriendBot, *, you: str = "You", chat_id: int = LOCAL_CHAT_ID
    ) -> None:
        self.service = service
        self.you = you
        self.chat_id = chat_id
        self._next_id = self._last_message_id() + 1
        self._read_line: ReadLine | None = None
        self._game: GuessGame | None = None

    async def run(self, read_line: ReadLine, show: Show) -> None:
        """Read lines until quit or end of input; answer each one."""
        self._read_line = read_line
        show(None, f"Chatting as {self.you} in chat {self.chat_id}. /help for commands.")
        while True:
            line = await read_line()
            if line is None or line.strip() in QUIT:
                return
            line = line.strip()
            if not line:
                continue
            try:
                await self.handle(line, show)
            except UsageError as exc:
                show(None, str(exc))
            except GenerationTimeout:
                show(None, "That took too long. Try again.")
            except Exception as exc:  # as the Telegram bot: log, tell, carry on
                log.exception("local chat: %r failed", line)
                show(None, f"Something went wrong: {exc!r}")

    async def handle(self, line: str, show: Show) -> None:
        """One line: a command, or a message (yours or a friend's) that gets an answer."""
        if line.startswith("/"):
            await self.command(line, show)
            return
        speaker, text, sender_id = self._speaker(line)
        decision = self.service.observe(
            MessageRecord(
                chat_id=self.chat_id,
                message_id=self._take_id(),
                sender_id=sender_id,
                sender_name=speaker,
                text=text,
                date=datetime.now(UTC),
                chat_title=CHAT_TITLE,
                chat_type=CHAT_TYPE,
            ),
            addressed=True,  # in the terminal, every line is said to the bot
        )
        if decision:
            reply = await self.service.reply_in_character(self.chat_id, speaker)
            if reply is not None:
                self._post(reply, show)

    async def command(self, line: str, show: Show) -> None:
        """The Telegram commands, answered here (``/cmd@bot`` is accepted too)."""
        words = line.split()
        name, args = words[0][1:].split("@", 1)[0].lower(), words[1:]
        service, text = self.service, " ".join(args)
        if name in ("help", "start"):
            show(None, HELP)
        elif name == "paraphrase":
            options = await service.paraphrase(text, self.you)
            show(None, "\n".join(f"{i}. {o}" for i, o in enumerate(options, 1)) or "(nothing)")
        elif name == "joke":
            self._post(await service.joke(self.chat_id, text, self.you), show)
        elif name == "as":
            self._post(await service.reply_as(self.chat_id, args, self.you), show)
        elif name == "recall":
            found = await service.recall(self.chat_id, text, self.you)
            if found.reply is not None:
                self._post(found.reply, show)
            lines = found.found_lines()
            show(None, "found:\n" + "\n".join(lines) if lines else f"Nothing about {found.topic}.")
        elif name == "optout":
            deleted = await service.opt_out(LOCAL_USER_ID, self.you, None)
            show(None, f"You opted out; {deleted} stored messages deleted.")
        elif name == "optin":
            await service.opt_in(LOCAL_USER_ID, self.you, None)
            show(None, "You opted in again.")
        elif name == "stats":
            stats = await service.stats(self.chat_id)
            show(None, "\n".join(f"{key}: {value}" for key, value in stats.items()))
        elif name == "forget":
            show(None, f"Deleted {await service.forget(self.chat_id)} stored messages.")
        elif name in ("mute", "unmute"):
            await service.set_muted(self.chat_id, name == "mute")
            show(None, "Muted." if name == "mute" else "Unmuted.")
        elif name == "guess":
            await self.guess(show)
        elif name == "guessstats":
            show(None, await self.game.stats(self.chat_id))
        elif name == "reload":
            show(None, "Reloaded.\n" + (await service.reload()).describe())
        else:
            show(None, f"Unknown command /{name}. /help lists them.")

    @property
    def game(self) -> GuessGame:
        if self._game is None:
            self._game = GuessGame(self.service)
        return self._game

    async def guess(self, show: Show) -> None:
        """A /guess round where you are the only voter: the answer comes right after your vote.

        No cooldown here (nobody else is waiting for a turn); GUESS_MIN_AGE applies as in a
        group, so the excerpt is an older conversation of this chat, or, when there is none
        (a fresh setup), a held-out one of the training data. The terminal chat is nobody's
        Telegram chat: it plays the training data's chat when the data holds just one (the
        sample export); with ``--chat-id`` it plays that chat, as the group would.
        """
        game = self.game
        where = Where(CHAT_TITLE, CHAT_TYPE, stand_in=self.chat_id == LOCAL_CHAT_ID)
        try:
            view = await game.start(self.chat_id, cooldown=False, where=where)
        except Refused as exc:
            show(None, str(exc))
            return
        show(None, view.text())
        real = None
        while real is None:
            show(None, "Real or bot? (r/b)")
            answer = await self._read_line() if self._read_line else None
            if answer is None:
                break
            real = {"r": True, "real": True, "b": False, "bot": False}.get(answer.strip().lower())
        if real is not None:
            await game.vote(view.round_id, self.chat_id, LOCAL_USER_ID, real)
        outcome = await game.reveal(view.round_id)
        if outcome is not None:
            show(None, outcome.text())

    def _speaker(self, line: str) -> tuple[str, str, int | None]:
        """``Name: text`` speaks as a friend (no user id); anything else is you."""
        name, sep, text = line.partition(": ")
        if sep and text.strip() and 0 < len(name.split()) <= MAX_NAME_WORDS and len(name) <= 64:
            return name.strip(), text.strip(), None
        return self.you, line, LOCAL_USER_ID

    def _post(self, reply: Reply, show: Show) -> None:
        show(reply.speaker, reply.text)
        self.service.record_sent(
            reply, chat_id=self.chat_id, message_id=self._take_id(), bot_id=None
        )

    def _take_id(self) -> int:
        message_id, self._next_id = self._next_id, self._next_id + 1
        return message_id

    def _last_message_id(self) -> int:
        """Continue after what the chat already holds, so ids never collide with stored ones."""
        from storage.history import last_message_id

        with self.service.sessions.begin() as session:
            return last_message_id(session, self.chat_id) or 0


def prepare_stdin() -> None:
    """Make standard input safe to read lines from, before anything slow starts.

    A closed descriptor (``friendbot chat <&-``, a service without stdin) is one clear error
    rather than a traceback once the models have loaded. Bytes that are not valid in the
    input encoding (a Latin-1 terminal, a binary pipe) are read as U+FFFD: with strict
    decoding the line raised, and with Python's ``surrogateescape`` it reached the database
    writer, which then failed and dropped it.
    """
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        raise InputError(
            "standard input is closed: `friendbot chat` reads your lines from it "
            "(run it in a terminal, or pipe lines in; < /dev/null just ends the chat)"
        )
    reconfigure = getattr(stdin, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="replace")


def run_local_chat(settings: Settings, *, you: str = "You", chat_id: int = LOCAL_CHAT_ID) -> None:
    """Start the bot's machinery without Telegram and chat in this terminal until quit."""
    from rich.console import Console
    from rich.markup import escape
    from rich.text import Text

    prepare_stdin()
    console = Console(highlight=False)

    def show(speaker: str | None, text: str) -> None:
        if speaker is None:
            console.print(Text(text, style="dim"))
        else:
            console.print(Text.assemble((speaker, "bold cyan"), ": ", text))

    async def read_line() -> str | None:
        try:
            return await asyncio.to_thread(console.input, f"[bold]{escape(you)}[/bold]> ")
        except EOFError:
            return None
        except (OSError, RuntimeError) as exc:  # the input went away mid-chat (EBADF, EIO)
            console.print(Text(f"standard input: {exc}; leaving", style="dim"))
            return None

    async def main() -> None:
        service = FriendBot(settings)
        with console.status("loading the models..."):
            await asyncio.to_thread(service.start)
        try:
            await LocalChat(service, you=you, chat_id=chat_id).run(read_line, show)
        finally:
            await asyncio.to_thread(service.stop)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        console.print()
