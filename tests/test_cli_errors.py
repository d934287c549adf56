"""A user's mistake never shows a traceback: usage errors get the usage message and status 2,
an unusable file gets one line naming it and status 2, and a real bug gets one line, status 1
and a hint (FRIENDBOT_DEBUG=1 shows the traceback).

The commands run as a user runs them: the installed ``friendbot`` console script in a
subprocess, so what is tested is what a user's shell sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from training.cli import new_app, run

FRIENDBOT = Path(sys.executable).with_name("friendbot")
SAMPLE = Path(__file__).parents[1] / "examples" / "sample_chat" / "result.json"


def friendbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    env.pop("FRIENDBOT_DEBUG", None)
    return subprocess.run(
        [str(FRIENDBOT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["nosuch"], "No such command 'nosuch'"),
        (["prepare"], "Missing argument"),
        (["prepare", "x.json"], "Missing option '--out'"),
        (["prepare", "x.json", "--out", "o", "--bogus"], "No such option: --bogus"),
        (["prepare", "x.json", "--out", "o", "--context", "many"], "Invalid value for '--context'"),
        (["train", "--data", "d", "--out", "m", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["train", "--data", "d", "--out"], "Option '--out' requires an argument"),
        (["history", "abc"], "Invalid value for "),
    ],
)
def test_usage_mistakes_print_usage_and_exit_2(args: list[str], error: str, tmp_path: Path) -> None:
    done = friendbot(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"Error: {error}" in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_no_command_shows_the_help(tmp_path: Path) -> None:
    done = friendbot(cwd=tmp_path)
    assert done.returncode in (0, 2)  # click >= 8.2 counts it as a usage mistake (2)
    assert "Usage:" in done.stdout + done.stderr and "prepare" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def unusable_inputs(tmp_path: Path) -> list[Path]:
    """Inputs that cannot be read: a directory, a dangling link, and (as a user) mode 000."""
    folder = tmp_path / "folder.json"
    folder.mkdir()
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "gone.json")
    paths = [folder, dangling]
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        locked = tmp_path / "locked.json"
        locked.write_text("{}")
        locked.chmod(0)
        paths.append(locked)
    return paths


@pytest.mark.parametrize("command", ["chats", "prepare"])
def test_an_unreadable_export_is_one_line_naming_it(command: str, tmp_path: Path) -> None:
    for path in unusable_inputs(tmp_path):
        out = ["--out", str(tmp_path / "out")] if command == "prepare" else []
        done = friendbot(command, str(path), *out, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"friendbot: error: {path}: "), lines
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["prepare", "train"])
def test_out_naming_an_existing_file_is_refused_and_the_file_kept(
    command: str, tmp_path: Path
) -> None:
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    args = [str(SAMPLE)] if command == "prepare" else ["--data", str(tmp_path), "--overwrite"]
    done = friendbot(command, *args, "--out", str(mine), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"friendbot: error: {mine}: exists and is not a directory; choose another output path"
    )
    assert mine.read_text() == "my notes\n"


# --- the last resort, in this process: an exception no command expected ---------------------


def failing_app(exc: BaseException) -> typer.Typer:
    app = new_app()

    @app.command("boom")
    def boom() -> None:
        raise exc

    app.command("other")(lambda: None)
    return app


def test_a_bug_is_one_line_with_a_hint_and_status_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRIENDBOT_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as stopped:
        run(failing_app(KeyError("speakers")), ["boom"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "friendbot: internal error: KeyError: 'speakers' "
        "(run with FRIENDBOT_DEBUG=1 for the traceback)"
    )


def test_friendbot_debug_shows_the_real_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRIENDBOT_DEBUG", "1")
    with pytest.raises(KeyError, match="speakers"):
        run(failing_app(KeyError("speakers")), ["boom"])


def test_a_file_the_system_refuses_is_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FRIENDBOT_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    refused = PermissionError(13, "Permission denied", "/data/export.json")
    with pytest.raises(SystemExit) as stopped:
        run(failing_app(refused), ["boom"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "friendbot: error: /data/export.json: Permission denied"
    )
