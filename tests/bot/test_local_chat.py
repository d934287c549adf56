"""``friendbot chat`` and ``friendbot history``: the terminal front end over the same machinery."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bot import cli_bot
from bot.local_chat import LOCAL_CHAT_ID, LocalChat
from bot.service import FriendBot
from bot.settings import Settings
from storage.history import recent_messages
from tests.bot.scripted_engine import ScriptedEngine, served


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FriendBot]:
    settings = Settings(
        _env_file=None,
        database_url=f"sqlite:///{tmp_path / 'chat.db'}",
        generation_seed=3,
    )
    engine = ScriptedEngine(lambda p: ["Bob: sure"] if "reply as" not in p else ["fine by me"])
    bot = FriendBot(settings, loader=served(engine))
    bot.start()
    yield bot
    bot.stop()


async def converse(bot: FriendBot, lines: list[str | None]) -> list[tuple[str | None, str]]:
    shown: list[tuple[str | None, str]] = []
    feed = iter(lines)

    async def read_line() -> str | None:
        return next(feed, None)

    await LocalChat(bot, you="Me").run(read_line, lambda who, text: shown.append((who, text)))
    return shown


async def test_lines_are_stored_and_answered(service: FriendBot) -> None:
    shown = await converse(
        service, ["Bob: anyone climbing?", "", "count me in", None, "never read"]
    )
    replies = [(who, text) for who, text in shown if who]
    # Bob asked first and is the only friend known: the model's "Bob: sure" answers the asker
    # in his own voice, so it is refused and Bob is asked for explicitly (the only choice).
    assert replies == [("Bob", "fine by me"), ("Bob", "sure")]
    service.writer.flush()
    with service.sessions.begin() as session:
        rows = [
            (m.sender_name, m.text, m.from_bot) for m in recent_messages(session, LOCAL_CHAT_ID, 10)
        ]
    assert rows == [
        ("Bob", "anyone climbing?", False),
        ("Bob", "fine by me", True),
        ("Me", "count me in", False),
        ("Bob", "sure", True),
    ]


async def test_commands_work_and_quit_ends(service: FriendBot) -> None:
    shown = await converse(
        service,
        [
            "Bob: hi",
            "/paraphrase",
            "/joke",
            "/as Bob how are you",
            "/mute",
            "quiet?",
            "/unmute",
            "/stats",
            "/nope",
            "/quit",
            "after quit",
        ],
    )
    notes = [text for who, text in shown if who is None]
    assert any(n.startswith("Usage: /paraphrase") for n in notes)
    assert ("Me", "fine by me") in shown or ("Bob", "fine by me") in shown  # the joke
    assert ("Bob", "fine by me") in shown  # /as Bob
    assert "Muted." in notes and "Unmuted." in notes
    assert any("messages:" in n for n in notes)
    assert any("Unknown command /nope" in n for n in notes)
    # "quiet?" was stored but not answered while muted
    texts = [text for _, text in shown]
    assert "after quit" not in texts


def test_chat_command_with_the_tiny_model_exits_on_eof(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    db = tmp_path / "data" / "friendbot.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("MAX_NEW_TOKENS", "4")
    monkeypatch.setenv("GENERATION_SEED", "1")
    app = typer.Typer()
    cli_bot.register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["chat", "--name", "Tester"], input="Bob: yo\nhello there\n")
    assert result.exit_code == 0, result.output
    history = runner.invoke(app, ["history", str(LOCAL_CHAT_ID), "--json"])
    assert history.exit_code == 0, history.output
    rows = json.loads(history.output)
    humans = [(r["sender_name"], r["text"]) for r in rows if not r["from_bot"]]
    assert humans == [("Bob", "yo"), ("Tester", "hello there")]
    assert sum(r["from_bot"] for r in rows) == 2  # one reply per line


def test_history_of_a_missing_database_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    app = typer.Typer()
    cli_bot.register(app)
    result = CliRunner().invoke(app, ["history", "-100123"])
    assert result.exit_code != 0
    assert "no friendbot database" in str(result.exception)
    assert not (tmp_path / "none.db").exists()


def test_chat_with_stdin_closed_is_one_line_not_a_traceback(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`friendbot chat <&-` (a service unit without stdin): the installed command."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "MODEL_DIR": str(tiny_model_dir),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}"}  # fmt: skip
    done = subprocess.run(
        [str(Path(sys.executable).with_name("friendbot")), "chat"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(0),
    )
    assert done.returncode == 2, done.stderr
    assert "standard input is closed" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0
    assert not (tmp_path / "chat.db").exists()  # refused before anything started


def test_invalid_utf8_on_stdin_is_read_as_replacement_characters(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'chat.db'}")
    monkeypatch.setenv("MODEL_DIR", str(tiny_model_dir))
    monkeypatch.setenv("MAX_NEW_TOKENS", "4")
    app = typer.Typer()
    cli_bot.register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["chat", "--name", "Tester"], input=b"Bob: caf\xe9 ok\nhi\n")
    assert result.exit_code == 0, result.output
    history = runner.invoke(app, ["history", str(LOCAL_CHAT_ID), "--json"])
    humans = [
        (r["sender_name"], r["text"]) for r in json.loads(history.output) if not r["from_bot"]
    ]
    assert humans == [("Bob", "caf\ufffd ok"), ("Tester", "hi")]


async def test_recall_in_the_terminal(service: FriendBot) -> None:
    shown = await converse(
        service, ["Bob: the Prague trip was great", "/recall prague", "/recall skiing"]
    )
    notes = [text for who, text in shown if who is None]
    found = next(text for text in notes if text.startswith("found:"))
    assert re.fullmatch(r"found:\n\d{4}-\d\d-\d\d Bob: the Prague trip was great", found)
    assert "Nothing about skiing." in notes
