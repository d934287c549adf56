"""A tiny `friendbot prepare` dataset for /guess's training-data rounds, and the
friendbot.json record of a model trained on it (its fingerprint computed as training does)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

LONG_AGO = datetime(2024, 3, 1, tzinfo=UTC)
COLUMNS = ("conversation", "response", "sender", "sender_id", "chat_id", "session_id",
           "message_id", "date")  # fmt: skip


def row(
    chat_id: int,
    context: list[str],
    sender: str,
    text: str,
    *,
    user: int | None,
    message_id: int,
    date: datetime | None = None,
) -> dict[str, Any]:
    """One pair: ``context`` lines (``Name: text``) and ``sender``'s real next line."""
    return {
        "conversation": "\n".join(context),
        "response": f"{sender}: {text}",
        "sender": sender,
        "sender_id": f"user{user}" if user is not None else "channel77",
        "chat_id": chat_id,
        "session_id": message_id // 10,
        "message_id": message_id,
        "date": date or LONG_AGO + timedelta(minutes=message_id),
    }


def write_dataset(out: Path, test_rows: list[dict[str, Any]]) -> Path:
    """train / validation / test parquet files under ``out`` (train and validation small and
    fixed: only their fingerprint matters here)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    filler = [
        row(-1, ["Ann: hi"], "Ben", f"train line {i}", user=2, message_id=i) for i in range(4)
    ]
    for split, rows in (("train", filler), ("validation", filler[:2]), ("test", test_rows)):
        pd.DataFrame(rows, columns=list(COLUMNS)).to_parquet(out / f"{split}.parquet", index=False)
    return out


def trained_on(data_dir: Path, path: str | None = None) -> dict[str, Any]:
    """friendbot.json's ``dataset`` record of a model trained on ``data_dir``."""
    from training.model.tasks import fingerprint_files, trained_files

    return {
        "path": path or str(data_dir),
        "dir": str(Path(data_dir).resolve()),
        "fingerprint": fingerprint_files(trained_files(data_dir)),
    }
