"""friendbot's settings: one object per process, read from the environment and ``.env``.

Every process (the bot, ``friendbot retrain``, ``schedule``, ``runs``, ``rollback``, and the
children they start, which inherit the environment) reads the same variables through
:func:`load`, so ``DATABASE_URL`` or ``MODELS_DIR`` cannot mean one thing to the bot and another
to retraining. Two values that must agree (``MODEL_DIR`` and ``MODELS_DIR/current``) are checked
here, once, and a disagreement stops the start with one line instead of a warning in a log.

The settings are grouped in sections, one class per area; the variable names stay flat
(``RETRAIN_CRON``, not ``RETRAIN__CRON``): a field's name is its variable's name.
:class:`TrainingSettings` holds what a process without the bot reads (storage, models,
retraining); ``bot.settings.Settings`` extends it with the bot's sections. This module never
imports the bot: training runs on a machine without Telegram code.

Every field appears in ``.env.example`` with its default (tests/test_env_example.py checks it).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from storage.db import DEFAULT_DATABASE_URL
from training.errors import InputError, first_line
from training.model.model_dir import CURRENT

ENV_FILE = ".env"
DEFAULT_MODELS_DIR = Path("models")

SETTINGS_CONFIG = SettingsConfigDict(
    env_file=ENV_FILE,
    env_file_encoding="utf-8",
    env_ignore_empty=True,  # `PARAPHRASE_MODEL=` in .env means "the default"
    extra="ignore",  # variables of other tools may share the environment and .env
    case_sensitive=False,
    frozen=True,
)


class StorageSection(BaseModel):
    """Where the messages, runs, the retrain lock and the schedule's job are stored."""

    database_url: str = Field(
        DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the database (docs/storage.md)."
    )


class ModelsSection(BaseModel):
    """Where model directories live, and which one the bot serves."""

    models_dir: Path = Field(
        DEFAULT_MODELS_DIR,
        description="Folder of model directories and the `current`/`previous` links.",
    )
    model_dir: Path = Field(
        DEFAULT_MODELS_DIR / CURRENT,
        description="The chat model the bot serves (default: MODELS_DIR/current; resolved "
        "again on every reload).",
    )

    @model_validator(mode="before")
    @classmethod
    def _served_model_follows_models_dir(cls, data: Any) -> Any:
        """MODEL_DIR defaults to MODELS_DIR/current; both set to different places is an error.

        Retraining promotes into MODELS_DIR/current and the bot serves MODEL_DIR: if they
        differ, every promoted model is silently never served.
        """
        if not isinstance(data, dict):
            return data
        models_dir, model_dir = data.get("models_dir"), data.get("model_dir")
        if not _is_path(models_dir):
            return data  # absent (the default) or of a wrong type (its field reports it)
        promoted = Path(models_dir) / CURRENT
        if model_dir is None:
            return {**data, "model_dir": promoted}
        if _is_path(model_dir) and Path(model_dir).absolute() != promoted.absolute():
            raise ValueError(
                f"MODEL_DIR={model_dir} and MODELS_DIR={models_dir} disagree: the bot serves "
                f"MODEL_DIR but retraining promotes into {promoted}; set only MODELS_DIR "
                "(MODEL_DIR then defaults to MODELS_DIR/current), or only MODEL_DIR"
            )
        return data


class RetrainSection(BaseModel):
    """Scheduled retraining: inputs, schedule, how a candidate is trained and judged."""

    exports_dir: Path = Field(
        Path("exports"),
        description="Folder the admins drop Telegram Desktop exports into (searched recursively).",
    )
    retrain_cron: str = Field(
        "0 4 * * *", description="Crontab schedule (5 fields) of `friendbot schedule`."
    )
    retrain_timezone: str = Field(
        "", description="IANA time zone of RETRAIN_CRON; empty means the machine's local zone."
    )
    retrain_misfire_grace_s: int | None = Field(
        None,
        ge=1,
        description="How late a missed scheduled run may still start; unset means always (once).",
    )

    retrain_from: Literal["base", "current"] = Field(
        "base",
        description="Train from RETRAIN_BASE_MODEL, or continue from the served model.",
    )
    retrain_base_model: str = Field(
        "tiny", description="Hub id, local directory or `tiny` (offline) for `friendbot train`."
    )
    retrain_chat: str | None = Field(
        None, description="Chat name or id to take from full-account exports (prepare --chat)."
    )
    retrain_include_bot_history: bool = Field(
        False,
        description="Also train on human messages the bot stored since the newest export.",
    )
    retrain_use_feedback: bool = Field(
        False,
        description="Train on what the group said about the bot's replies: liked replies "
        "become extra training examples for that friend, and liked/disliked ones fit the "
        "best-of-k reply scorer saved with the candidate.",
    )
    retrain_tolerance: float = Field(
        0.01,
        ge=0.0,
        description="Promote when candidate loss <= current loss + this (nats per token).",
    )
    retrain_fool_gate_votes: int = Field(
        0,
        ge=0,
        description="0: off. N: the served model is replaced only once the friends gave N "
        "votes on its /guess lines (its fool rate is known before it goes).",
    )
    retrain_eval_split: Literal["validation", "test"] = Field(
        "validation", description="Held-out split both models are evaluated on."
    )
    keep_models: int = Field(
        3, ge=2, description="Retrained model directories kept (current and previous included)."
    )
    retrain_export_ct2: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Convert a promoted model to CTranslate2 (auto: when the served one has ct2/).",
    )

    retrain_train_command: str = Field(
        "", description="Command that trains (default: this Python's `-m training.cli train`)."
    )
    retrain_train_args: str = Field(
        "", description="Extra arguments appended to the train command (shell syntax)."
    )
    retrain_prepare_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description='PrepareOptions overrides as JSON, e.g. {"session_gap": 90, "scrub": true}.',
    )
    retrain_train_timeout_s: int | None = Field(
        None, ge=1, description="Kill a training that runs longer than this; unset: no limit."
    )
    retrain_work_dir: Path = Field(
        Path("data/retrain"), description="Scratch datasets of runs and their training logs."
    )
    retrain_lock_stale_s: int = Field(
        900,
        ge=10,
        description="A lock whose holder stopped heartbeating this long ago is taken over.",
    )

    retrain_in_bot: bool = Field(
        False, description="Run the schedule inside the bot instead of `friendbot schedule`."
    )
    retrain_watch_interval_s: float = Field(
        5.0, gt=0, description="How often the bot checks for a promoted model and finished runs."
    )

    @field_validator("retrain_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("retrain_cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-field crontab expression")
        return value

    @field_validator("retrain_prepare_options", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        """Parse the JSON here, so a typo is a line naming the variable, not a traceback."""
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object, e.g. {"session_gap": 90}')
        return value

    def train_command(self) -> list[str]:
        """The argv prefix that trains a model; ``--data/--base-model/--out`` are appended."""
        if self.retrain_train_command.strip():
            return shlex.split(self.retrain_train_command)
        return [sys.executable, "-m", "training.cli", "train"]

    def train_extra_args(self) -> list[str]:
        """Extra ``friendbot train`` options (e.g. ``--epochs 3``), split like a shell would."""
        return shlex.split(self.retrain_train_args)

    def timezone(self) -> Any:
        """The zone RETRAIN_CRON is read in: the configured one or the machine's."""
        if self.retrain_timezone:
            return zoneinfo.ZoneInfo(self.retrain_timezone)
        import tzlocal

        return tzlocal.get_localzone()


class TrainingSettings(StorageSection, ModelsSection, RetrainSection, BaseSettings):
    """Every setting a process without the bot reads: storage, models, retraining."""

    model_config = SETTINGS_CONFIG


S = TypeVar("S", bound=BaseSettings)


def load(settings_class: type[S], env_file: Path | str | None = ENV_FILE, **overrides: Any) -> S:
    """The settings (environment first, then ``env_file``), or one InputError for all problems.

    Each problem names its variable (``REPLY_PROBABILITY: Input should be less than or equal
    to 1``) and never echoes the value given, which may be a secret.
    """
    try:
        return settings_class(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise InputError(describe(exc)) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{env_file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{env_file}: cannot read ({exc.strerror or first_line(exc)})") from None
    except SettingsError as exc:  # a value no validator saw (pydantic-settings' own parsing)
        raise InputError(first_line(exc)) from None


def load_settings(env_file: Path | str | None = ENV_FILE, **overrides: Any) -> TrainingSettings:
    """The settings of a training or retraining command (see :func:`load`)."""
    return load(TrainingSettings, env_file, **overrides)


def describe(exc: ValidationError) -> str:
    """One line for a failed validation: ``NAME: what is wrong`` per problem, ``; ``-joined."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = ".".join(str(p) for p in error["loc"]).upper()
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike) and str(value) != ""
