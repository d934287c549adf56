""".env.example shows every setting with its real default, so the two cannot drift apart.

Its convention: each ``# NAME=value`` line is the default (``NAME=``: unset, the default
applies); examples live in the comment lines above. Each line is read through the real loader
on its own and must give exactly the default, and every field of the settings has its line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.settings import Settings, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"
LINE = re.compile(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$")
NOT_SETTINGS = {"FRIENDBOT_TEST_POSTGRES_URL"}  # read by the test suite, not by friendbot


def example_lines() -> list[tuple[str, str]]:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    return [(m[1], m[2]) for m in map(LINE.match, lines) if m]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_each_name_has_one_line() -> None:
    names = [name for name, _ in example_lines()]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_every_setting_has_a_line() -> None:
    shown = {name for name, _ in example_lines()}
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in shown)
    assert not missing


@pytest.mark.parametrize(("name", "value"), example_lines(), ids=lambda x: str(x)[:30])
def test_each_line_is_the_default(name: str, value: str, tmp_path: Path) -> None:
    if name in NOT_SETTINGS:
        assert value == "", f"{name}: shown as unset, its example in the comment"
        return
    assert name.lower() in Settings.model_fields, f"{name}: not a setting"
    default = getattr(load_settings(env_file=None), name.lower())
    if value == "":
        assert not default, f"{name}= says unset, but the default is {default!r}"
        return
    env = tmp_path / "one.env"
    env.write_text(f"{name}={value}\n", encoding="utf-8")
    assert getattr(load_settings(env_file=env), name.lower()) == default, f"{name}={value}"
