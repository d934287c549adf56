"""The bot's settings: the shared ones (training/settings.py) plus the bot's own sections.

One object per process: ``Settings`` extends ``training.settings.TrainingSettings``, so the bot
and the retraining it runs or watches read one ``DATABASE_URL``, one ``MODELS_DIR`` and one
``MODEL_DIR`` from one ``.env``, through one loader (``training.settings.load``).

Every knob has a safe default, so a bot needs only ``TELEGRAM_BOT_TOKEN`` and
``ALLOWED_CHAT_IDS`` to join a group; the local terminal chat needs nothing at all. The token is
a ``SecretStr``: it prints as ``**********`` in reprs, logs and error messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from training.model.decoding import (
    NO_REPEAT_NGRAM_SIZE,
    REPETITION_PENALTY,
    REPLY_CANDIDATES,
    TEMPERATURE,
    TOP_P,
)
from training.settings import ENV_FILE, SETTINGS_CONFIG, TrainingSettings, load

TELEGRAM_API = "https://api.telegram.org/bot"
TELEGRAM_FILES = "https://api.telegram.org/file/bot"

IdSet = Annotated[frozenset[int], NoDecode]


class TelegramSection(BaseModel):
    """Who the bot is, where the Bot API is, which chats and users it listens to."""

    telegram_bot_token: SecretStr | None = Field(
        None, description="Token from @BotFather. Unset: `friendbot demo` runs the local chat."
    )
    telegram_api_base_url: str = Field(
        TELEGRAM_API,
        description="Bot API base URL, token appended (a local Bot API server, or a test fake).",
    )
    telegram_api_base_file_url: str = Field(
        TELEGRAM_FILES,
        description="Where the bot downloads files (exports sent to it), token appended; "
        "a local Bot API server's is http://HOST:PORT/file/bot.",
    )
    allowed_chat_ids: IdSet = Field(
        frozenset(),
        description="Chats (Bot API ids, e.g. -100123) the bot reads, stores and answers; "
        "every other chat is ignored entirely.",
    )
    admin_user_ids: IdSet = Field(
        frozenset(),
        description="Telegram user ids allowed /reload /stats /forget /mute /unmute "
        "/retrain /runs.",
    )
    webhook_url: str | None = Field(
        None, description="Public HTTPS URL for webhook mode; unset: long polling."
    )
    webhook_listen: str = Field("0.0.0.0", description="Address the webhook server binds.")
    webhook_port: int = Field(8443, ge=1, le=65535, description="Port the webhook server binds.")
    webhook_secret_token: SecretStr | None = Field(
        None, description="Secret Telegram sends with each webhook call (recommended)."
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

    @field_validator("telegram_api_base_url", "telegram_api_base_file_url")
    @classmethod
    def _check_base_url(cls, value: str, info: ValidationInfo) -> str:
        """python-telegram-bot appends the token to this URL as it is: without the final
        ``/bot`` the token lands in the port or the host and the start fails deep inside httpx
        (``Invalid port: '45999<token>'``). The value itself is never quoted: a token pasted
        into it must not reach the message."""
        files = "/file" if info.field_name == "telegram_api_base_file_url" else ""
        expected = (
            f"must look like https://api.telegram.org{files}/bot or http://HOST:PORT{files}/bot"
        )
        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(f"the port is not a number; {expected}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL; {expected}")
        if not parts.path.endswith("/bot") or parts.query or parts.fragment:
            raise ValueError(f"must end with /bot (the token is appended to it); {expected}")
        return value

    @property
    def token(self) -> str | None:
        """The bot token in clear, for the one place that needs it (building the Bot)."""
        return self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else None


class HistorySection(BaseModel):
    """How much stored history the model sees, and how long it is kept."""

    history_size: int = Field(
        10, ge=1, le=200, description="Recent messages of a chat given to the model as context."
    )
    history_retention_days: int | None = Field(
        None, ge=1, description="Delete stored messages older than this many days (unset: keep)."
    )
    history_keep_per_chat: int | None = Field(
        None, ge=1, description="Keep at most this many stored messages per chat (unset: all)."
    )
    long_memory: bool = Field(
        True,
        description="Put older messages found by search into the prompt when the model was "
        "trained with memory (friendbot.json); false turns it off. /recall works either way.",
    )


class ReplySection(BaseModel):
    """When the bot speaks unprompted."""

    reply_probability: float = Field(
        0.05, ge=0.0, le=1.0, description="Chance of an unprompted reply to a message."
    )
    reply_cooldown: float = Field(
        120.0, ge=0.0, description="Seconds between two unprompted replies in one chat."
    )


class GenerationSection(BaseModel):
    """The task models and how replies are generated (the chat model is MODEL_DIR)."""

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
        None,
        ge=1,
        description="CPU threads per generation (unset: the fastest of 1, 2 and 4, up to the "
        "cores, timed with a small test reply when the model loads).",
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
    temperature: float = Field(
        TEMPERATURE, gt=0, description="Sampling temperature for chat replies."
    )
    top_p: float = Field(TOP_P, gt=0, le=1, description="Nucleus sampling cut for chat replies.")
    no_repeat_ngram_size: int = Field(
        NO_REPEAT_NGRAM_SIZE,
        ge=0,
        description="A token n-gram this long never repeats within a reply (0: off).",
    )
    repetition_penalty: float = Field(
        REPETITION_PENALTY,
        gt=0,
        description="Tokens already in a reply are this much less likely again (1: off).",
    )
    reply_candidates: int = Field(
        REPLY_CANDIDATES,
        ge=1,
        le=16,
        description="Chat replies sampled at once; the best-scored one is sent (1: the first). "
        "4: the most whose p50 stays within 1.5x of one (BENCHMARKS.md).",
    )
    generation_seed: int | None = Field(
        None, description="Seed every generation (repeatable replies, for tests and demos)."
    )
    max_input_chars: int = Field(
        300, ge=10, le=4000, description="Longest text accepted by /paraphrase, /joke and /as."
    )


class GuessSection(BaseModel):
    """``/guess``: the friends judge lines, real or bot (bot/guess.py)."""

    guess_cooldown: float = Field(
        600.0, ge=0.0, description="Seconds between the starts of two /guess rounds in one chat."
    )
    guess_votes: int = Field(
        3, ge=1, le=100, description="Votes after which a /guess round is revealed."
    )
    guess_timeout: float = Field(
        3600.0, gt=0, description="Seconds after which a /guess round is revealed anyway."
    )
    guess_min_age: float = Field(
        2.0,
        ge=0.0,
        description="Days: excerpts from messages newer than this are never used (no spoilers "
        "of a live conversation).",
    )


class FeedbackSection(BaseModel):
    """Which reactions to the bot's replies count as liked and which as disliked (issue 14)."""

    feedback_positive: str = Field(
        "👍 😂 ❤️ 🔥",
        description="Reactions that mean the group liked a bot reply (space-separated emoji).",
    )
    feedback_negative: str = Field(
        "👎 🤮 💩",
        description="Reactions that mean the group disliked a bot reply (space-separated).",
    )

    @field_validator("feedback_negative")
    @classmethod
    def _disjoint(cls, value: str, info: ValidationInfo) -> str:
        """One emoji cannot mean both: say which instead of silently picking one."""
        both = emoji_set(value) & emoji_set(info.data.get("feedback_positive", ""))
        if both:
            raise ValueError(f"{' '.join(sorted(both))} is also in FEEDBACK_POSITIVE")
        return value


def emoji_set(value: str) -> frozenset[str]:
    """Space-separated emoji, compared without variation selectors: Telegram sends the red
    heart as U+2764 alone, while a keyboard types U+2764 U+FE0F."""
    return frozenset(part.replace("\ufe0f", "") for part in value.split() if part)


class Settings(
    TelegramSection,
    HistorySection,
    ReplySection,
    GenerationSection,
    GuessSection,
    FeedbackSection,
    TrainingSettings,
):
    """Everything the bot process reads: the bot's sections plus storage, models, retraining."""

    model_config = SETTINGS_CONFIG


def load_settings(env_file: Path | str | None = ENV_FILE, **overrides: Any) -> Settings:
    """The bot's settings from the environment (and ``env_file``), or one clear InputError.

    A bad value names the variable (``REPLY_PROBABILITY: Input should be less than or equal
    to 1``) and never echoes a secret's value.
    """
    return load(Settings, env_file, **overrides)
