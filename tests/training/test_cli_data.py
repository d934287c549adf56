"""`friendbot chats` and `friendbot prepare` as a user types them: output and exit codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.main import get_command

from tests.cli_runner import friendbot
from training.cli import new_app
from training.data import cli as data_cli
from training.data.options import PrepareOptions

EXPORTS = Path(__file__).parent / "fixtures" / "exports"
SAMPLE = Path(__file__).parents[2] / "examples" / "sample_chat" / "result.json"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # one error line stays one line


def test_chats_lists_id_type_name_and_count() -> None:
    code, out = friendbot("chats", str(EXPORTS / "full_account.json"))
    assert code == 0, out
    for expected in ("-1001555000111", "public_supergroup", "Climbing Club", "Board Games"):
        assert expected in out
    assert "5 chat(s)" in out


def test_prepare_options_are_the_fields_of_prepare_options() -> None:
    """Each option is declared once, as a PrepareOptions field; old spellings all remain."""
    app = new_app()
    data_cli.register(app)
    params = {p.name: p for p in get_command(app).commands["prepare"].params}  # type: ignore[attr-defined]
    cli_fields = [f for f in dataclasses.fields(PrepareOptions) if f.metadata.get("cli", True)]
    assert set(params) == {"exports", "out"} | {f.name for f in cli_fields}
    for f in cli_fields:
        assert params[f.name].help == f.metadata["help"], f.name
    spellings = {o for p in params.values() for o in (*p.opts, *p.secondary_opts)}
    old = "--bot --chat --context --exclude --merge-bursts --min-context --no-sticker-emoji --out "
    old += "--scrub --seed --session-gap --speakers --split --sticker-emoji --workers -o"
    assert set(old.split()) <= spellings


def test_prepare_prints_the_stats_table(tmp_path: Path) -> None:
    out_dir = tmp_path / "sample"
    code, out = friendbot("prepare", str(SAMPLE), "--out", str(out_dir), "--session-gap", "90")
    assert code == 0, out
    stats = json.loads((out_dir / "stats.json").read_text())
    assert stats["options"]["session_gap"] == 90
    assert "messages read" in out and "6,021" in out
    assert f"{stats['pairs']['train']:,}" in out
    assert "responses by Alice" in out


def test_prepare_options_reach_the_dataset(tmp_path: Path) -> None:
    out_dir = tmp_path / "club"
    code, out = friendbot(
        "prepare", str(EXPORTS / "full_account.json"), "--out", str(out_dir),
        "--chat", "Climbing Club", "--exclude", "Dan", "--min-context", "0",
        "--split", "100/0/0", "--context", "1", "--scrub", "--merge-bursts", "5",
    )  # fmt: skip
    assert code == 0, out
    options = json.loads((out_dir / "stats.json").read_text())["options"]
    assert options["chat"] == ["Climbing Club"] and options["exclude"] == ["Dan"]
    assert options["split"] == [1.0, 0.0, 0.0] and options["scrub"] is True
    assert options["merge_bursts"] == 5.0 and options["context"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.json"], "missing.json: no such file"),
        ([str(EXPORTS / "full_account.json")], "choose one with --chat NAME_OR_ID"),
        ([str(SAMPLE), "--split", "80/20"], "--split 80/20: expected three numbers"),
        ([str(SAMPLE), "--context", "0"], "--context 0: must be at least 1"),
    ],
)
def test_prepare_errors_are_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    code, out = friendbot("prepare", *args, "--out", str(tmp_path / "x"))
    assert code == 2
    assert message in out
    assert out.strip().count("\n") == 0
    assert not (tmp_path / "x").exists()


def test_invalid_json_exits_2_with_the_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n "name": "x",\n "messages": [\n  {\n   "id": 1,,\n  }\n ]\n}\n')
    code, out = friendbot("prepare", str(bad), "--out", str(tmp_path / "x"))
    assert code == 2
    assert "bad.json: invalid JSON at line 5" in out


def test_a_channel_is_refused_in_one_line_unless_allowed(tmp_path: Path) -> None:
    posts = [
        {"id": i, "type": "message", "date_unixtime": str(1717243200 + 60 * i),
         "from": "Daily News", "from_id": "channel777", "text": f"headline {i}"}
        for i in range(1, 30)
    ]  # fmt: skip
    channel = tmp_path / "channel.json"
    channel.write_text(json.dumps({"name": "Daily News", "type": "public_channel", "id": 777,
                                   "messages": posts}, indent=1))  # fmt: skip
    code, out = friendbot("prepare", str(channel), "--out", str(tmp_path / "x"))
    assert code == 2, out
    assert "1 speaker(s) in chat Daily News (public_channel): Daily News" in out
    assert "--allow-single-speaker" in out and out.strip().count("\n") == 0
    assert not (tmp_path / "x").exists()

    code, out = friendbot(
        "prepare", str(channel), "--out", str(tmp_path / "y"), "--allow-single-speaker"
    )
    assert code == 0, out
    assert "responses by Daily News" in out


def test_invalid_utf8_is_a_warning_with_the_offset_in_chats_and_prepare(tmp_path: Path) -> None:
    data = (EXPORTS / "single_chat.json").read_bytes().replace(b"first session", b"fi\xffrst", 1)
    damaged = tmp_path / "damaged.json"
    damaged.write_bytes(data)
    bad = data.index(b"\xff")
    expected = (
        "damaged.json: 1 invalid UTF-8 byte sequence(s) read as U+FFFD; the first at "
        f"byte {bad} (line 44, column 24)"
    )
    code, out = friendbot("chats", str(damaged))
    assert code == 0 and "Climbing Club" in out and "25" in out
    assert expected in out and "warning: " in out
    code, out = friendbot("prepare", str(damaged), "--out", str(tmp_path / "club"))
    assert code == 0, out
    assert expected in out
    stats = json.loads((tmp_path / "club" / "stats.json").read_text())
    assert stats["files"][0]["invalid_utf8"]["count"] == 1
    assert stats["warnings"] == [out.split("warning: ", 1)[1].split("\n", 1)[0]]
