"""``friendbot history``, ``friendbot runs`` and ``friendbot judge-report`` only read: on a
database they cannot use they say so in one line (exit 2), and they never create, migrate or
touch a file.

Run as a user would: the installed console script in a subprocess, each case checked for its
one line and for every file of the directory unchanged (bytes and mtime) afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from storage.db import make_engine, session_factory, upgrade
from storage.history import add_message, upsert_chat
from storage.runs import finish_run, start_run
from tests.storage.conftest import T0

FRIENDBOT = Path(sys.executable).with_name("friendbot")
CHAT = -1001
COMMANDS = {
    "history": ["history", str(CHAT)],
    "runs": ["runs"],
    "judge-report": ["judge-report"],
}
READ_BACK = {  # what each command's --json shows of good_database's contents
    "history": "message 199",
    "runs": '"status": "skipped"',
    "judge-report": '"by_model": []',
}


def friendbot(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [str(FRIENDBOT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def snapshot(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under ``root`` with its bytes (None for a directory) and mtime."""
    return {
        str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def good_database(path: Path, revision: str = "head") -> Path:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine, revision)
    if revision == "head":
        with session_factory(engine).begin() as session:
            upsert_chat(session, CHAT, "Friends", "supergroup")
            for i in range(200):  # a few pages, so a truncated copy is damaged inside
                add_message(
                    session,
                    chat_id=CHAT,
                    message_id=i,
                    sender_id=1,
                    sender_name="Alice",
                    text=f"message {i} " * 20,
                    date=T0,
                )
            run = start_run(session, "cli")
            finish_run(session, run.id, status="skipped", decision="nothing new")
    engine.dispose()  # checkpoints the log: a clean file, as after the bot stopped
    assert not Path(f"{path}-wal").exists()
    return path


def missing(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'typo' / 'friendbot.db'}"


def empty(tmp: Path) -> str:
    (tmp / "friendbot.db").touch()
    return f"sqlite:///{tmp / 'friendbot.db'}"


def corrupt(tmp: Path) -> str:
    (tmp / "friendbot.db").write_bytes(b"these are not the bytes you are looking for\n" * 100)
    return f"sqlite:///{tmp / 'friendbot.db'}"


def truncated(tmp: Path) -> str:
    path = good_database(tmp / "full.db")
    data = path.read_bytes()
    path.unlink()
    (tmp / "friendbot.db").write_bytes(data[: len(data) // 3])
    return f"sqlite:///{tmp / 'friendbot.db'}"


def newer(tmp: Path) -> str:
    path = good_database(tmp / "friendbot.db")
    with closing(sqlite3.connect(path)) as connection:  # as a future friendbot would leave it
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
        connection.commit()
    return f"sqlite:///{path}"


def older(tmp: Path) -> str:
    return f"sqlite:///{good_database(tmp / 'friendbot.db', revision='0001')}"


def foreign(tmp: Path) -> str:
    with closing(sqlite3.connect(tmp / "notes.db")) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    return f"sqlite:///{tmp / 'notes.db'}"


def unreachable_postgres(tmp: Path) -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"postgresql://friendbot:s3cret-pw@127.0.0.1:{port}/friendbot"


CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "missing": (missing, r"typo/friendbot\.db: no friendbot database here \(check DATABASE_URL"),
    "empty": (empty, r"friendbot\.db: empty file, not a friendbot database"),
    "corrupt": (corrupt, r"friendbot\.db: not an SQLite database file"),
    "truncated": (truncated, r"friendbot\.db: the database file is damaged \("),
    "newer": (newer, r"schema version 0099 is newer than this friendbot knows .*upgrade friendbot"),
    "older": (older, r"schema version 0001 is older .* `friendbot run` or `friendbot retrain`"),
    "foreign": (foreign, r"notes\.db: not a friendbot database \(no schema version\)"),
    "postgres": (unreachable_postgres, r"127\.0\.0\.1:\d+/friendbot: cannot connect to the data"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", CASES)
def test_unusable_database_is_one_line_and_nothing_changes(
    case: str, command: str, tmp_path: Path
) -> None:
    make, expected = CASES[case]
    url = make(tmp_path)
    before = snapshot(tmp_path)
    result = friendbot(COMMANDS[command], url, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("friendbot: error: "), result.stderr
    assert re.search(expected, lines[0]), lines[0]
    assert "s3cret-pw" not in result.stderr and result.stdout == ""
    assert snapshot(tmp_path) == before  # no directory, database, -wal or -shm created


@contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """``directory`` made unwritable for real: mode 555, and (root ignores modes) immutable."""
    directory.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr") is not None
    if immutable:
        subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
    try:
        try:
            (directory / "probe").touch()
        except OSError:
            pass
        else:
            pytest.fail(f"cannot make {directory} read-only here (root, and no chattr +i)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
        directory.chmod(0o755)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_in_a_read_only_directory_is_read(command: str, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    url = f"sqlite:///{good_database(folder / 'friendbot.db')}"
    before = snapshot(tmp_path)
    with read_only(folder):
        result = friendbot([*COMMANDS[command], "--json"], url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert READ_BACK[command] in result.stdout
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_current_database_is_read_and_left_as_it_was(command: str, tmp_path: Path) -> None:
    url = f"sqlite:///{good_database(tmp_path / 'friendbot.db')}"
    before = snapshot(tmp_path)
    result = friendbot([*COMMANDS[command], "--json"], url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert READ_BACK[command] in result.stdout
    assert snapshot(tmp_path) == before  # not even an empty -wal or -shm beside it
