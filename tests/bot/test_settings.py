"""Settings: every variable read from the environment or .env, validated, the token kept secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import TELEGRAM_API, Settings, load_settings
from training.errors import InputError

TOKEN = "123456:SECRET-token-value"
FRIENDBOT = Path(sys.executable).with_name("friendbot")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the developer's shell leaks in: every variable Settings reads is unset."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_defaults_need_nothing() -> None:
    settings = load_settings(env_file=None)
    assert settings.telegram_bot_token is None and settings.token is None
    assert settings.telegram_api_base_url == TELEGRAM_API
    assert settings.database_url == "sqlite:///data/friendbot.db"
    assert settings.model_dir == Path("models/current")
    assert settings.allowed_chat_ids == frozenset()
    assert settings.paraphrase_model is None and settings.joke_model is None
    assert settings.webhook_url is None
    assert 0 < settings.reply_probability < 1
    assert settings.history_size == 10


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", "http://127.0.0.1:8081/bot")
    monkeypatch.setenv("ALLOWED_CHAT_IDS", "-1001234567890, -42")
    monkeypatch.setenv("ADMIN_USER_IDS", "7 8")
    monkeypatch.setenv("REPLY_PROBABILITY", "0.25")
    monkeypatch.setenv("REPLY_COOLDOWN", "30")
    monkeypatch.setenv("MODEL_DIR", "models/other")
    monkeypatch.setenv("PARAPHRASE_MODEL", "models/flan")
    monkeypatch.setenv("GENERATION_TIMEOUT", "5")
    settings = load_settings(env_file=None)
    assert settings.token == TOKEN
    assert settings.telegram_api_base_url == "http://127.0.0.1:8081/bot"
    assert settings.allowed_chat_ids == {-1001234567890, -42}
    assert settings.admin_user_ids == {7, 8}
    assert settings.reply_probability == 0.25
    assert settings.reply_cooldown == 30.0
    assert settings.model_dir == Path("models/other")
    assert settings.paraphrase_model == Path("models/flan")
    assert settings.generation_timeout == 5.0


def test_dotenv_file_and_json_lists(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        f"TELEGRAM_BOT_TOKEN={TOKEN}\nALLOWED_CHAT_IDS=[-1, -2]\nJOKE_MODEL=\n"
        "SOMETHING_FOR_TRAINING=ignored\n"
    )
    settings = load_settings(env_file=env)
    assert settings.token == TOKEN
    assert settings.allowed_chat_ids == {-1, -2}
    assert settings.joke_model is None  # empty means the default


def test_token_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    settings = load_settings(env_file=None)
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings)
    assert TOKEN not in settings.model_dump_json()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REPLY_PROBABILITY", "1.5"),
        ("REPLY_COOLDOWN", "-1"),
        ("HISTORY_SIZE", "0"),
        ("ALLOWED_CHAT_IDS", "-100,abc"),
        ("TELEGRAM_API_BASE_URL", "127.0.0.1/bot"),
        ("TELEGRAM_API_BASE_URL", "http://127.0.0.1:45999"),
        ("TELEGRAM_API_BASE_URL", f"https://api.telegram.org/bot{TOKEN}"),
        ("GENERATION_TIMEOUT", "0"),
        ("RETRAIN_PREPARE_OPTIONS", "{session_gap: 90}"),
        ("RETRAIN_CRON", "every day"),
        ("FEEDBACK_NEGATIVE", "👎 ❤"),  # the heart is positive by default (❤️ = ❤)
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError) as info:
        load_settings(env_file=None)
    assert name in str(info.value)
    assert TOKEN not in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(ValueError):
        settings.reply_probability = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:45999",  # the token would be glued to the port
        "http://127.0.0.1:45999/",
        "https://api.telegram.org",  # ... or to the host
        "https://api.telegram.org/bot/",
        "http://127.0.0.1:45x/bot",
        "ftp://127.0.0.1/bot",
    ],
)
def test_a_base_url_the_token_cannot_be_appended_to_says_what_it_must_look_like(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", url)
    with pytest.raises(InputError) as info:
        load_settings(env_file=None)
    message = str(info.value)
    assert message.startswith("TELEGRAM_API_BASE_URL: ")
    assert "https://api.telegram.org/bot" in message and "/bot" in message
    assert "\n" not in message and TOKEN not in message


@pytest.mark.parametrize(
    "url", ["https://api.telegram.org/bot", "http://127.0.0.1:8081/bot", "http://[::1]:81/x/bot"]
)
def test_base_urls_ending_in_bot_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("TELEGRAM_API_BASE_URL", url)
    assert load_settings(env_file=None).telegram_api_base_url == url


def test_run_with_a_base_url_without_bot_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """What a user's shell shows: before, an 80-line traceback ending in "Invalid port:
    '45999<TOKEN>'"; now one line naming the variable, exit status 2, the token nowhere."""
    env = {
        **{k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields},
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": "http://127.0.0.1:45999",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'friendbot.db'}",
        "NO_COLOR": "1",
        "COLUMNS": "250",
    }
    done = subprocess.run(
        [str(FRIENDBOT), "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("friendbot: error: TELEGRAM_API_BASE_URL: must end with /bot")
    assert TOKEN not in done.stderr + done.stdout
    assert not any(tmp_path.iterdir())  # nothing created: no database, no log


def test_one_settings_object_carries_every_section(tmp_path: Path) -> None:
    """The bot and its retraining hooks read one object from one .env."""
    from training.settings import TrainingSettings

    env = tmp_path / ".env"
    env.write_text("MODELS_DIR=/srv/models\nRETRAIN_WATCH_INTERVAL_S=30\nHISTORY_SIZE=5\n")
    settings = load_settings(env_file=env)
    assert isinstance(settings, TrainingSettings)
    assert settings.model_dir == Path("/srv/models/current")  # follows MODELS_DIR
    assert settings.retrain_watch_interval_s == 30.0 and settings.history_size == 5
