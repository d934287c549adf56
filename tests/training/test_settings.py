"""Training's settings (training/settings.py): the shared fields, MODEL_DIR, one-line errors.

Training reads them without the bot; the bot's Settings extends the same class, so what is
checked here holds for every process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.errors import InputError
from training.settings import TrainingSettings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TrainingSettings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_model_dir_defaults_to_models_dir_current(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(env_file=None).model_dir == Path("models/current")
    monkeypatch.setenv("MODELS_DIR", "/srv/friendbot/models")
    settings = load_settings(env_file=None)
    assert settings.models_dir == Path("/srv/friendbot/models")
    assert settings.model_dir == Path("/srv/friendbot/models/current")


def test_model_dir_alone_is_served_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_DIR", "models/friends")
    settings = load_settings(env_file=None)
    assert settings.model_dir == Path("models/friends")
    assert settings.models_dir == Path("models")


def test_model_dir_and_models_dir_that_agree_are_fine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELS_DIR", "models")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models" / "current"))  # same place
    assert load_settings(env_file=None).model_dir == tmp_path / "models" / "current"


def test_model_dir_and_models_dir_that_disagree_are_one_error(tmp_path: Path) -> None:
    """Before: a warning in the bot's log, and every promoted model silently never served."""
    env = tmp_path / ".env"
    env.write_text("MODELS_DIR=/srv/models\nMODEL_DIR=models/current\n")
    with pytest.raises(InputError) as info:
        load_settings(env_file=env)
    message = str(info.value)
    assert "MODEL_DIR=models/current and MODELS_DIR=/srv/models disagree" in message
    assert "/srv/models/current" in message and "\n" not in message


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{session_gap: 90}", "RETRAIN_PREPARE_OPTIONS: not valid JSON"),
        ("[90]", "RETRAIN_PREPARE_OPTIONS: must be a JSON object"),
    ],
)
def test_bad_prepare_options_are_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    """Before: pydantic-settings' own JSON parsing raised SettingsError, a traceback."""
    monkeypatch.setenv("RETRAIN_PREPARE_OPTIONS", value)
    with pytest.raises(InputError, match=says):
        load_settings(env_file=None)


def test_prepare_options_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRAIN_PREPARE_OPTIONS", '{"session_gap": 90, "scrub": true}')
    assert load_settings(env_file=None).retrain_prepare_options == {
        "session_gap": 90,
        "scrub": True,
    }


def test_an_env_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"RETRAIN_CHAT=Caf\xe9\n")  # byte 16: the Latin-1 e-acute
    with pytest.raises(InputError, match=r"\.env: not UTF-8 text \(byte 16\)"):
        load_settings(env_file=env)


def test_several_problems_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEP_MODELS", "1")
    monkeypatch.setenv("RETRAIN_TIMEZONE", "Mars/Olympus")
    with pytest.raises(InputError) as info:
        load_settings(env_file=None)
    message = str(info.value)
    assert "KEEP_MODELS: " in message and "RETRAIN_TIMEZONE: unknown time zone" in message
    assert "Value error" not in message and "\n" not in message
