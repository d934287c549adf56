"""Settings: every variable read from the environment or .env, validated, the token kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import TELEGRAM_API, Settings, load_settings
from training.errors import InputError

TOKEN = "123456:SECRET-token-value"
VARIABLES = (
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_BASE_URL",
    "ALLOWED_CHAT_IDS",
    "ADMIN_USER_IDS",
    "DATABASE_URL",
    "REPLY_PROBABILITY",
    "REPLY_COOLDOWN",
    "HISTORY_SIZE",
    "MODEL_DIR",
    "PARAPHRASE_MODEL",
    "JOKE_MODEL",
    "GENERATION_TIMEOUT",
    "WEBHOOK_URL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


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
        ("GENERATION_TIMEOUT", "0"),
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
