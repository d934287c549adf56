"""Settings of scheduled retraining, read from the environment (and ``.env``).

One class, so ``friendbot retrain``, ``friendbot schedule`` and the bot (``RETRAIN_IN_BOT``)
read exactly the same values: a child process started by any of them inherits the
environment and therefore the same configuration. Every field is documented in
``.env.example`` and docs/retraining.md.
"""

from __future__ import annotations

import shlex
import sys
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.db import DEFAULT_DATABASE_URL


class RetrainSettings(BaseSettings):
    """Where exports and models live, when to retrain, and how a candidate is judged."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",  # .env is shared with the bot's and training's settings
        case_sensitive=False,
        frozen=True,
    )

    exports_dir: Path = Field(
        Path("exports"),
        description="Folder the admins drop Telegram Desktop exports into (searched recursively).",
    )
    models_dir: Path = Field(
        Path("models"), description="Folder of model directories and the `current` pointer."
    )
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the database.")

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
    retrain_tolerance: float = Field(
        0.01,
        ge=0.0,
        description="Promote when candidate loss <= current loss + this (nats per token).",
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
    retrain_prepare_options: dict[str, Any] = Field(
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


def load_settings(env_file: Path | str | None = ".env", **overrides: Any) -> RetrainSettings:
    """Read the settings (environment, then ``env_file``), or one InputError naming the variable."""
    from pydantic import ValidationError

    from training.errors import InputError

    try:
        return RetrainSettings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"]).upper() or "settings"
            problems.append(f"{name}: {error['msg']}")
        raise InputError("; ".join(problems)) from None
