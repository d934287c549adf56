"""The bot's settings: environment variables (or a ``.env`` file), validated once at start.

Every knob has a safe default, so a bot needs only ``TELEGRAM_BOT_TOKEN`` and
``ALLOWED_CHAT_IDS`` to join a group; the local terminal chat needs nothing at all. The token is
a ``SecretStr``: it prints as ``**********`` in reprs, logs and error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from training.errors import InputError

TELEGRAM_API = "https://api.telegram.org/bot"
DEFAULT_DATABASE_URL = "sqlite:///data/friendbot.db"  # = storage.db.DEFAULT_DATABASE_URL

IdSet = Annotated[frozenset[int], NoDecode]


class Settings(BaseSettings):
    """Everything the bot reads from the environment; field names are the variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `PARAPHRASE_MODEL=` in .env means "the default"
        extra="ignore",  # .env is shared with the training and retraining settings
        case_sensitive=False,
        frozen=True,
    )

    # Telegram
    telegram_bot_token: SecretStr | None = Field(
        None, description="Token from @BotFather. Unset: `friendbot demo` runs the local chat."
    )
    telegram_api_base_url: str = Field(
        TELEGRAM_API,
        description="Bot API base URL, token appended (a local Bot API server, or a test fake).",
    )
    allowed_chat_ids: IdSet = Field(
        frozenset(),
        description="Chats (Bot API ids, e.g. -100123) the bot reads, stores and answers; "
        "every other chat is ignored entirely.",
    )
    admin_user_ids: IdSet = Field(
        frozenset(), description="Telegram user ids allowed /reload /stats /forget /mute /unmute."
    )
    webhook_url: str | None = Field(
        None, description="Public HTTPS URL for webhook mode; unset: long polling."
    )
    webhook_listen: str = Field("0.0.0.0", description="Address the webhook server binds.")
    webhook_port: int = Field(8443, ge=1, le=65535, description="Port the webhook server binds.")
    webhook_secret_token: SecretStr | None = Field(
        None, description="Secret Telegram sends with each webhook call (recommended)."
    )

    # Storage
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL.")
    history_size: int = Field(
        10, ge=1, le=200, description="Recent messages of a chat given to the model as context."
    )
    history_retention_days: int | None = Field(
        None, ge=1, description="Delete stored messages older than this many days (unset: keep)."
    )
    history_keep_per_chat: int | None = Field(
        None, ge=1, description="Keep at most this many stored messages per chat (unset: all)."
    )

    # Reply policy
    reply_probability: float = Field(
        0.05, ge=0.0, le=1.0, description="Chance of an unprompted reply to a message."
    )
    reply_cooldown: float = Field(
        120.0, ge=0.0, description="Seconds between two unprompted replies in one chat."
    )

    # Models and generation
    model_dir: Path = Field(
        Path("models/current"), description="Chat model directory (resolved again on reload)."
    )
    paraphrase_model: Path | None = Field(
        None,
        description="Model for /paraphrase (unset: the base FLAN-T5 when available offline, "
        "else the chat model).",
    )
    joke_model: Path | None = Field(
        None, description="Model for /joke (unset: as for PARAPHRASE_MODEL)."
    )
    inference_backend: Literal["auto", "hf", "ct2"] = Field(
        "auto", description="auto: CTranslate2 when MODEL_DIR/ct2 exists, else HF generate."
    )
    inference_threads: int | None = Field(
        None, ge=1, description="CPU threads per generation (unset: all cores)."
    )
    generation_timeout: float = Field(
        30.0, gt=0, description="Seconds a reply may take (queueing included) before it is dropped."
    )
    generation_workers: int = Field(
        1,
        ge=1,
        le=8,
        description="Generations run at once (each uses every core, and one model runs one "
        "generation at a time anyway; more helps only when task models are separate).",
    )
    max_new_tokens: int = Field(48, ge=1, le=512, description="Longest reply, in tokens.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature for chat replies.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling cut for chat replies.")
    generation_seed: int | None = Field(
        None, description="Seed every generation (repeatable replies, for tests and demos)."
    )
    max_input_chars: int = Field(
        300, ge=10, le=4000, description="Longest text accepted by /paraphrase, /joke and /as."
    )

    @field_validator("allowed_chat_ids", "admin_user_ids", mode="before")
    @classmethod
    def _parse_ids(cls, value: Any) -> Any:
        """Accept `-100123,-100456` or space-separated ids as well as a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part for part in text.replace(",", " ").split() if part]
        if isinstance(value, int):
            return [value]
        return value

    @field_validator("telegram_api_base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def token(self) -> str | None:
        """The bot token in clear, for the one place that needs it (building the Bot)."""
        return self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else None


def load_settings(env_file: Path | str | None = ".env", **overrides: Any) -> Settings:
    """Read settings from the environment (and ``env_file``), or one clear InputError.

    A bad value names the variable (``REPLY_PROBABILITY: Input should be less than or equal
    to 1``) and never echoes a secret's value.
    """
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"]).upper() or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise InputError("; ".join(problems)) from None
