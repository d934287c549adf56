"""A small fake Telegram Bot API server on 127.0.0.1 for end-to-end tests.

The real bot (python-telegram-bot's own networking) talks to it through
``TELEGRAM_API_BASE_URL``. Tests queue updates (``say``), and the server hands them out through
``getUpdates`` long polling with Telegram's offset semantics; every call the bot makes is
recorded, so a test asserts what the bot sent. It runs in a thread with the standard library's
HTTP server, independent of the event loop the bot runs on.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote

# python-telegram-bot sends string parameters raw and everything else JSON-encoded.
STRING_FIELDS = frozenset(
    {"text", "parse_mode", "action", "caption", "url", "secret_token", "language_code"}
)
_TAG = re.compile(r"<[^>]+>")
OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
"""Update types Telegram sends only when ``allowed_updates`` names them."""


ADMIN_RIGHTS = (
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)
RESTRICTED_RIGHTS = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
    "can_edit_tag",
    "can_react_to_messages",
)


class ApiError(Exception):
    """Raised by a fake API method: answered as a Bot API error (``ok: false``)."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


@dataclass(frozen=True)
class Call:
    """One Bot API request the bot made."""

    method: str
    params: dict[str, Any]
    ok: bool = True  # False for a call answered with an (injected) error
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class FakeUser:
    id: int
    first_name: str
    username: str | None = None
    is_bot: bool = False
    last_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        return data


@dataclass(frozen=True)
class FakeChat:
    id: int
    title: str | None = "Friends"
    type: str = "supergroup"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.title:
            data["title"] = self.title
        return data


class FakeTelegram:
    """The fake server: start it, point the bot at ``base_url``, feed updates, read calls."""

    def __init__(
        self,
        token: str = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz",
        bot_id: int = 777000111,
        bot_username: str = "friendbot_test_bot",
    ) -> None:
        self.token = token
        self.bot = FakeUser(bot_id, "Friendbot", bot_username, is_bot=True)
        self.calls: list[Call] = []
        self.commands: list[dict[str, Any]] = []
        self.can_read_all_group_messages = True  # getMe's field; False is privacy mode
        self._chats: dict[int, FakeChat] = {}  # what getChat and getChatMember know
        self._members: dict[tuple[int, int], str] = {}  # (chat id, user id) -> status
        self._updates: list[dict[str, Any]] = []
        self.allowed_updates: list[str] | None = None  # as the bot's last getUpdates set it
        self.confirmed: list[int] = []  # update ids the bot confirmed: Telegram forgot them
        self._next_update_id = 1
        self._next_message_id: dict[int, int] = {}
        self._failures: dict[str, list[tuple[int, str]]] = {}
        self._files: dict[str, tuple[bytes, int]] = {}  # file_id -> (bytes, claimed size)
        self.messages_sent: list[dict[str, Any]] = []  # sendMessage results, with their ids
        self._cond = threading.Condition()
        self._closing = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeTelegram:
        """Listen on an ephemeral port of 127.0.0.1 (never any other interface)."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release long polls, then shut the server down."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What ``TELEGRAM_API_BASE_URL`` must be: the token is appended to it."""
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/bot"

    @property
    def base_file_url(self) -> str:
        """What ``TELEGRAM_API_BASE_FILE_URL`` must be: files are served under it."""
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/file/bot"

    # --- feeding updates ----------------------------------------------------------------------

    def say(
        self,
        chat: FakeChat,
        user: FakeUser,
        text: str,
        *,
        reply_to: dict[str, Any] | None = None,
        date: int | None = None,
    ) -> dict[str, Any]:
        """Queue a text message from ``user`` in ``chat``; ``@username`` and ``/command``
        get their entities as Telegram would add them. ``date`` (Unix time, default now)
        lets a test replay an old conversation. Returns the message."""
        message = {
            "message_id": self._message_id(chat.id),
            "date": int(time.time()) if date is None else date,
            "chat": chat.to_dict(),
            "from": user.to_dict(),
            "text": text,
        }
        entities = _entities(text)
        if entities:
            message["entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        self.push({"message": message})
        return message

    def send_document(
        self,
        chat: FakeChat,
        user: FakeUser,
        file_name: str,
        data: bytes,
        *,
        file_size: int | None = None,
        mime_type: str = "application/json",
    ) -> dict[str, Any]:
        """Queue a document message; getFile and the file URL then serve ``data``.

        ``file_size`` is what the message (and getFile) claim, default ``len(data)``; above
        20 MB getFile answers as the cloud Bot API does ("file is too big")."""
        size = len(data) if file_size is None else file_size
        with self._cond:
            file_id = f"DOC{len(self._files) + 1}"
            self._files[file_id] = (data, size)
        message = {
            "message_id": self._message_id(chat.id),
            "date": int(time.time()),
            "chat": chat.to_dict(),
            "from": user.to_dict(),
            "document": {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_name": file_name,
                "mime_type": mime_type,
                "file_size": size,
            },
        }
        self.push({"message": message})
        return message

    def press(self, user: FakeUser, message: dict[str, Any], data: str) -> int:
        """Queue a callback query: ``user`` pressed a button with ``data`` under ``message``
        (a message the bot sent: see ``messages_sent``)."""
        with self._cond:
            query_id = f"Q{self._next_update_id}"
        return self.push(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user.to_dict(),
                    "chat_instance": "fake-instance",
                    "message": message,
                    "data": data,
                }
            }
        )

    def react(
        self,
        chat: FakeChat,
        user: FakeUser | None,
        message_id: int,
        new: list[str],
        old: list[str] | None = None,
        *,
        custom: tuple[str, ...] = (),
        actor_chat: FakeChat | None = None,
    ) -> int:
        """Queue a ``message_reaction`` update as Telegram sends it: ``user`` (or, for an
        anonymous admin, ``actor_chat``) changed their reactions to ``message_id`` from
        ``old`` to ``new`` (emoji; ``custom`` adds custom emoji ids). Delivered only to a bot
        whose ``allowed_updates`` names ``message_reaction``."""
        emoji = [{"type": "emoji", "emoji": e} for e in new]
        emoji += [{"type": "custom_emoji", "custom_emoji_id": c} for c in custom]
        change: dict[str, Any] = {
            "chat": chat.to_dict(),
            "message_id": message_id,
            "date": int(time.time()),
            "old_reaction": [{"type": "emoji", "emoji": e} for e in old or []],
            "new_reaction": emoji,
        }
        if user is not None:
            change["user"] = user.to_dict()
        if actor_chat is not None:
            change["actor_chat"] = actor_chat.to_dict()
        return self.push({"message_reaction": change})

    def push(self, update: dict[str, Any]) -> int:
        """Queue any update (an ``update_id`` is added); returns its id."""
        with self._cond:
            update = {"update_id": self._next_update_id, **update}
            self._next_update_id += 1
            self._updates.append(update)
            self._cond.notify_all()
            return update["update_id"]

    def fail(self, method: str, *, times: int = 1, code: int = 400, description: str = "") -> None:
        """Make the next ``times`` calls of ``method`` fail with a Bot API error."""
        with self._cond:
            self._failures.setdefault(method, []).extend(
                [(code, description or "Bad Request: injected failure")] * times
            )

    # --- reading what the bot did -------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if c.method == method]

    def sent(self, chat_id: int | None = None) -> list[dict[str, Any]]:
        """Parameters of every delivered sendMessage (to ``chat_id`` if given), in order."""
        return [
            c.params
            for c in self.calls_to("sendMessage")
            if c.ok and (chat_id is None or c.params.get("chat_id") == chat_id)
        ]

    def queued(self) -> list[dict[str, Any]]:
        """The updates not confirmed yet, as ``getUpdates`` would hand them out now."""
        with self._cond:
            return [dict(u) for u in self._updates]

    def confirmed_ids(self) -> set[int]:
        """Ids of the updates the bot confirmed (Telegram will never hand them out again)."""
        with self._cond:
            return set(self.confirmed)

    def wait_confirmed(self, count: int, timeout: float = 60.0) -> int:
        """Block until the bot has confirmed at least ``count`` updates in all; returns how
        many it has (wakes at the moment of the confirming getUpdates, to act right then)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.confirmed) >= count, timeout):
                raise AssertionError(f"timed out after {timeout}s waiting for {count} confirmed")
            return len(self.confirmed)

    def pending_updates(self) -> int:
        """Updates not yet confirmed by the bot (it confirms with the next getUpdates offset)."""
        with self._cond:
            return len(self._updates)

    def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
        """Poll ``predicate()`` until it returns something truthy; fail the test on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)

    # --- the API ------------------------------------------------------------------------------

    def handle(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer one Bot API call (status, JSON body); recorded before answering."""
        with self._cond:
            failures = self._failures.get(method)
            self.calls.append(Call(method, params, ok=not failures))
            if failures:
                code, description = failures.pop(0)
                return code, {"ok": False, "error_code": code, "description": description}
        api = _API.get(method)
        if api is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            return 200, {"ok": True, "result": api(self, params)}
        except ApiError as exc:
            return exc.code, {"ok": False, "error_code": exc.code, "description": exc.description}

    def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.bot.to_dict(),
            "can_join_groups": True,
            "can_read_all_group_messages": self.can_read_all_group_messages,
            "supports_inline_queries": False,
        }

    def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        with self._cond:
            if params.get("allowed_updates") is not None:  # kept until a call changes it
                self.allowed_updates = list(params["allowed_updates"])
            self._updates = [u for u in self._updates if self._wanted(u)]
            # Telegram forgets every update below the offset: they are confirmed, and a bot
            # that did not keep them has lost them for good.
            confirmed = [u["update_id"] for u in self._updates if u["update_id"] < offset]
            if confirmed:
                self.confirmed += confirmed
                self._cond.notify_all()
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            while not self._updates and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
                self._updates = [u for u in self._updates if self._wanted(u)]
            return [dict(u) for u in self._updates[:limit]]

    def _wanted(self, update: dict[str, Any]) -> bool:
        """Telegram's rule: an empty or absent ``allowed_updates`` means every type but
        chat_member and the reactions; a listed type is delivered, the rest are dropped."""
        kind = next(k for k in update if k != "update_id")
        if not self.allowed_updates:
            return kind not in OPT_IN_UPDATES
        return kind in self.allowed_updates

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        text = str(params["text"])
        if params.get("parse_mode") == "HTML":
            text = html.unescape(_TAG.sub("", text))
        message: dict[str, Any] = {
            "message_id": self._message_id(chat_id),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"},
            "from": self.bot.to_dict(),
            "text": text,
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        with self._cond:
            self.messages_sent.append(message)
        return message

    # --- files and buttons (getFile, the file URL, callback queries) ----------------------------

    def _get_file(self, params: dict[str, Any]) -> dict[str, Any]:
        file_id = str(params["file_id"])
        with self._cond:
            if file_id not in self._files:
                raise ApiError(400, "Bad Request: invalid file_id")
            _, size = self._files[file_id]
        if size > 20 * 1024 * 1024:
            raise ApiError(400, "Bad Request: file is too big")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": size,
            "file_path": f"documents/{file_id}.bin",
        }

    def file_bytes(self, path: str) -> bytes | None:
        """The bytes served at ``/file/bot<token>/<path>`` (None: 404)."""
        match = re.fullmatch(r"documents/(\w+)\.bin", path)
        with self._cond:
            found = self._files.get(match.group(1)) if match else None
        return found[0] if found else None

    def _edited(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        return {
            "message_id": int(params["message_id"]),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private"},
            "from": self.bot.to_dict(),
            "text": str(params.get("text") or ""),
        }

    def _set_my_commands(self, params: dict[str, Any]) -> bool:
        with self._cond:
            self.commands = list(params.get("commands") or [])
        return True

    def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.commands)

    # --- chats and members (getChat, getChatMember) -----------------------------------------

    def add_chat(self, chat: FakeChat, *, bot_status: str = "member") -> None:
        """Make ``chat`` known to getChat, with the bot in it as ``bot_status`` (member,
        administrator, creator, restricted, left or kicked; unused for private chats)."""
        with self._cond:
            self._chats[chat.id] = chat
            self._members[(chat.id, self.bot.id)] = bot_status

    def _get_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = int(params["chat_id"])
        with self._cond:
            chat = self._chats.get(chat_id)
            status = self._members.get((chat_id, self.bot.id))
        if chat is None or (chat.type != "private" and status == "left"):
            raise ApiError(400, "Bad Request: chat not found")
        if chat.type != "private" and status == "kicked":
            raise ApiError(403, f"Forbidden: bot was kicked from the {chat.type} chat")
        data = chat.to_dict()
        if chat.type == "private":
            data["first_name"] = chat.title or "Someone"
            data.pop("title", None)
        return {
            **data,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _get_chat_member(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        with self._cond:
            if chat_id not in self._chats:
                raise ApiError(400, "Bad Request: chat not found")
            status = self._members.get((chat_id, user_id), "left")
        user = self.bot.to_dict() if user_id == self.bot.id else {"id": user_id, "is_bot": False}
        user.setdefault("first_name", "Someone")
        member: dict[str, Any] = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member |= {name: True for name in ADMIN_RIGHTS}
            member |= {"can_be_edited": False, "is_anonymous": False}
        elif status == "restricted":
            member |= {name: False for name in RESTRICTED_RIGHTS}
            member |= {"is_member": True, "until_date": 0}
        elif status == "kicked":
            member["until_date"] = 0
        return member

    def _message_id(self, chat_id: int) -> int:
        with self._cond:
            next_id = self._next_message_id.get(chat_id, 1)
            self._next_message_id[chat_id] = next_id + 1
            return next_id


_API: dict[str, Any] = {
    "getMe": FakeTelegram._get_me,
    "getUpdates": FakeTelegram._get_updates,
    "sendMessage": FakeTelegram._send_message,
    "sendChatAction": lambda self, params: True,
    "setMyCommands": FakeTelegram._set_my_commands,
    "getMyCommands": FakeTelegram._get_my_commands,
    "getChat": FakeTelegram._get_chat,
    "getChatMember": FakeTelegram._get_chat_member,
    "deleteMyCommands": lambda self, params: True,
    "getFile": FakeTelegram._get_file,
    "answerCallbackQuery": lambda self, params: True,
    "editMessageReplyMarkup": FakeTelegram._edited,
    "editMessageText": FakeTelegram._edited,
    "deleteWebhook": lambda self, params: True,
    "setWebhook": lambda self, params: True,
    "close": lambda self, params: True,
    "logOut": lambda self, params: True,
}


class _Handler(BaseHTTPRequestHandler):
    """HTTP glue: ``/bot<token>/<method>`` with form, JSON or query parameters."""

    fake: FakeTelegram
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        file_prefix = f"/file/bot{self.fake.token}/"
        path = unquote(self.path.partition("?")[0])  # PTB quotes the token's ":" as %3A
        if path.startswith(file_prefix):
            self._serve_file(path[len(file_prefix) :])
            return
        self._serve(self.path.partition("?")[2].encode())

    def _serve_file(self, path: str) -> None:
        data = self.fake.file_bytes(path)
        with self.fake._cond:
            self.fake.calls.append(Call("file", {"path": path}, ok=data is not None))
        if data is None:
            self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length))

    def _serve(self, body: bytes) -> None:
        path = self.path.partition("?")[0]
        prefix = f"/bot{self.fake.token}/"
        if not path.startswith(prefix):
            self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        method = path[len(prefix) :]
        self._reply(*self.fake.handle(method, _params(self.headers.get("Content-Type"), body)))

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the bot hung up
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


def _params(content_type: str | None, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    if content_type and content_type.startswith("application/json"):
        return json.loads(body)
    params: dict[str, Any] = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        if key in STRING_FIELDS:
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _entities(text: str) -> list[dict[str, Any]]:
    """Mention and bot-command entities, offsets in UTF-16 code units as Telegram counts."""
    entities = []
    for match in re.finditer(r"(?<!\w)(@\w{3,})|^(/\w+(?:@\w+)?)", text):
        kind = "mention" if match.group(1) else "bot_command"
        offset = len(text[: match.start()].encode("utf-16-le")) // 2
        length = len(match.group(0).encode("utf-16-le")) // 2
        entities.append({"type": kind, "offset": offset, "length": length})
    return entities
