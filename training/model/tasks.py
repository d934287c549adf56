"""Where training examples come from: the chat dataset, paraphrase pairs, or a jokes file.

Every task yields the same thing, ``Example(source, target, alt)``, so one training loop serves
the chat model and the task models behind the bot's ``/paraphrase`` and ``/joke`` commands.
``alt`` is a second way to ask for the same target (see ``batching.Encoded``). The prompt
helpers here (``paraphrase_prompt``, ``joke_prompt``) are what the bot must send to a task
model, so training and serving phrase requests identically.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from training.errors import InputError
from training.formatting import build_prompt, clean_text
from training.model.config import TASKS

SPLIT_FILES = {"train": "train.parquet", "validation": "validation.parquet", "test": "test.parquet"}
FEEDBACK_FILE = "feedback.parquet"
"""Beside a prepared dataset (written by ``friendbot retrain`` with RETRAIN_USE_FEEDBACK): the
bot's replies the group judged, with their context. Liked ones join the *train* split only."""
FEEDBACK_COLUMNS = ("conversation", "response", "sender", "label", "weight")
CHAT_COLUMNS = ("conversation", "response", "sender")
MEMORY_COLUMNS = ("memory", "voice")  # list columns of a `prepare --memory` dataset
STATS_FILE = "stats.json"
T = TypeVar("T")
HOLDOUT_FRACTION = 0.05  # validation share carved from a task file that has no dev split

_STOPWORDS_TEXT = """about after again also always because been before being between could
does doing down during each every from have having here into just like more most much only
other over said same should some such than that their them then there these they this those
through under until very what when where which while with would your yours didnt dont cant
wont whats thats theres heres"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


@dataclass(frozen=True, slots=True)
class Example:
    """One training pair in text form; ``alt`` is an optional second phrasing of the source."""

    source: str
    target: str
    alt: str | None = None


@dataclass(frozen=True)
class TaskData:
    """The examples of one task, split, with a fingerprint of the files they came from."""

    train: list[Example]
    validation: list[Example]
    fingerprint: str
    files: list[Path]
    memory: dict[str, int] | None = None  # a chat dataset with memory: lines per prompt


def paraphrase_prompt(text: str) -> str:
    """The input a paraphrase model expects (the bot's ``/paraphrase`` sends exactly this)."""
    return f"Paraphrase: {clean_text(text)}"


def joke_prompt(topic: str | None = None) -> str:
    """The input a joke model expects: ``Tell me a joke`` or ``Tell me a joke about TOPIC``."""
    topic = clean_text(topic or "")
    return f"Tell me a joke about {topic}" if topic else "Tell me a joke"


def fingerprint_files(paths: Iterable[Path]) -> str:
    """A short content hash of the input files: equal data gives an equal fingerprint."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# --- chat: the `friendbot prepare` dataset ------------------------------------------------


def split_path(data_dir: Path, split: str) -> Path:
    """The parquet file of one split, or an InputError naming what is missing."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such dataset directory (run `friendbot prepare` first)")
    if split not in SPLIT_FILES:
        raise InputError(f"{split}: unknown split (choose from {', '.join(SPLIT_FILES)})")
    path = data_dir / SPLIT_FILES[split]
    if not path.is_file():
        raise InputError(f"{path}: missing (is {data_dir} a `friendbot prepare` output?)")
    return path


def read_chat_split(data_dir: Path, split: str, *, required: bool = True) -> list[dict[str, Any]]:
    """Rows of one split as dicts with conversation, response and sender (strings), and, in a
    ``prepare --memory`` dataset, memory and voice (lists of ready ``memory:`` / ``voice:``
    lines)."""
    import pandas as pd
    import pyarrow.parquet as pq

    path = split_path(data_dir, split)
    try:
        present = set(pq.read_schema(path).names)
        extra = [c for c in MEMORY_COLUMNS if c in present]
        frame = pd.read_parquet(path, columns=[*CHAT_COLUMNS, *extra])
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"{path}: not a chat dataset ({exc})") from exc
    if required and frame.empty:
        raise InputError(f"{path}: no examples in the {split} split")
    frame[list(CHAT_COLUMNS)] = frame[list(CHAT_COLUMNS)].fillna("").astype(str)
    for column in extra:
        frame[column] = [[] if v is None else [str(x) for x in v] for v in frame[column]]
    return frame.to_dict("records")


def without_memory(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without memory and voice lines: for a model that was not trained with them."""
    return [{k: v for k, v in row.items() if k not in MEMORY_COLUMNS} for row in rows]


def chat_prompt(row: Mapping[str, Any], persona: str | None = None) -> str:
    """The model input of a dataset row: its memory lines (and, asked for a persona, the
    responder's voice lines) before its conversation.

    Voice lines go only into persona prompts: they are the *responder's* own messages, so in a
    free prompt they would tell the model who speaks next, the thing it has to guess there.
    """
    context = [line for line in str(row["conversation"]).split("\n") if line]
    memory = row.get("memory") or ()
    voice = (row.get("voice") or ()) if persona else ()
    return build_prompt(context, persona, memory=memory, voice=voice)


def chat_examples(rows: Sequence[Mapping[str, Any]]) -> list[Example]:
    """Chat pairs: the free prompt (the model picks the speaker) and the persona-hinted one."""
    return [
        Example(
            source=chat_prompt(row),
            target=row["response"],
            alt=chat_prompt(row, persona=row["sender"]) if row["sender"] else None,
        )
        for row in rows
    ]


def dataset_memory(data_dir: Path) -> dict[str, int] | None:
    """``{"memory_lines": N, "voice_lines": M}`` when ``prepare --memory`` made the dataset."""
    try:
        stats = json.loads((Path(data_dir) / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    memory = stats.get("memory") if isinstance(stats, dict) else None
    if not isinstance(memory, dict):
        return None
    return {key: int(memory.get(key, 0)) for key in ("memory_lines", "voice_lines")}


def liked_feedback_rows(data_dir: Path) -> list[dict[str, str]]:
    """The liked replies of ``DIR/feedback.parquet`` as chat rows, each repeated ``weight``
    times (none without the file).

    Repeated rather than weighted in the loss: the training loop, its token-budget batches
    and its DDP sharding stay exactly as they are, and an example seen twice per epoch pulls
    as a loss weight of two would.
    """
    import pandas as pd

    path = Path(data_dir) / FEEDBACK_FILE
    if not path.is_file():
        return []
    try:
        frame = pd.read_parquet(path, columns=list(FEEDBACK_COLUMNS))
    except (ValueError, KeyError, OSError) as exc:
        raise InputError(f"{path}: not a feedback file ({exc})") from exc
    rows = []
    for row in frame.to_dict("records"):
        if row["label"] != "liked":
            continue
        chat_row = {k: "" if row[k] is None else str(row[k]) for k in CHAT_COLUMNS}
        rows.extend([chat_row] * max(1, int(row["weight"])))
    return rows


def trained_files(data_dir: Path) -> list[Path]:
    """The files of a chat dataset a model learns from, in fingerprint order: the train and
    validation splits and, when present, the feedback file. The test split is not among them,
    so a model's recorded fingerprint tells whether a test split still sits beside the very
    data it was held out from (the bot's /guess plays such test rows)."""
    files = [split_path(data_dir, "train"), split_path(data_dir, "validation")]
    if (Path(data_dir) / FEEDBACK_FILE).is_file():
        files.append(Path(data_dir) / FEEDBACK_FILE)
    return files


def load_chat(data_dir: Path) -> TaskData:
    """Train and validation examples of a prepared chat dataset.

    Liked bot replies (``feedback.parquet``, when present) are added to the train split only:
    the held-out splits stay the sessions the gate has always judged on.
    """
    train_rows = read_chat_split(data_dir, "train") + liked_feedback_rows(data_dir)
    val_rows = read_chat_split(data_dir, "validation", required=False)
    files = trained_files(data_dir)
    return TaskData(
        train=chat_examples(train_rows),
        validation=chat_examples(val_rows),
        fingerprint=fingerprint_files(files),
        files=files,
        memory=dataset_memory(data_dir),
    )


# --- paraphrase: PAWS TSV (id, sentence1, sentence2, label) -------------------------------


def _read_paws(path: Path) -> list[tuple[str, str]]:
    """Paraphrase pairs (label 1) of one PAWS TSV file."""
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            missing = {"sentence1", "sentence2", "label"} - set(reader.fieldnames or [])
            if missing:
                raise InputError(f"{path}: not a PAWS TSV (missing {', '.join(sorted(missing))})")
            return [
                (clean_text(row["sentence1"] or ""), clean_text(row["sentence2"] or ""))
                for row in reader
                if (row["label"] or "").strip() == "1" and row["sentence1"] and row["sentence2"]
            ]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc


def paraphrase_examples(pairs: Sequence[tuple[str, str]]) -> list[Example]:
    """Both directions of every pair: a paraphrase of a paraphrase is the original."""
    return [
        Example(source=paraphrase_prompt(a), target=b)
        for s1, s2 in pairs
        for a, b in ((s1, s2), (s2, s1))
    ]


def load_paraphrase(path: Path, seed: int) -> TaskData:
    """PAWS pairs from a TSV file, or from a directory holding train.tsv (and dev.tsv)."""
    path = Path(path)
    if path.is_dir():
        train_file, dev_file = path / "train.tsv", path / "dev.tsv"
        if not train_file.is_file():
            raise InputError(f"{path}: no train.tsv (expected PAWS files train.tsv, dev.tsv)")
        files = [train_file] + ([dev_file] if dev_file.is_file() else [])
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"{path}: no such file or directory")
    train = _read_paws(files[0])
    if not train:
        raise InputError(f"{files[0]}: no paraphrase pairs (rows with label 1)")
    if len(files) > 1:
        validation = _read_paws(files[1])
    else:
        train, validation = _holdout(train, seed)
    return TaskData(
        train=paraphrase_examples(train),
        validation=paraphrase_examples(validation),
        fingerprint=fingerprint_files(files),
        files=files,
    )


# --- joke: a CSV with a `Joke` column -----------------------------------------------------


def guess_topic(joke: str) -> str | None:
    """A word the joke is about: its longest uncommon word (a crude but stable keyword)."""
    words = [w for w in re.findall(r"[^\W\d_]+", joke.lower()) if len(w) >= 4]
    words = [w for w in words if w not in _STOPWORDS]
    return max(words, key=len) if words else None


def joke_examples(rows: Sequence[tuple[str, str | None]]) -> list[Example]:
    """Joke requests: with a topic when one is known, and the plain request as the alternative."""
    examples = []
    for joke, topic in rows:
        topic = topic or guess_topic(joke)
        examples.append(
            Example(
                source=joke_prompt(topic),
                target=joke,
                alt=joke_prompt() if topic else None,
            )
        )
    return examples


def load_jokes(path: Path, seed: int) -> TaskData:
    """Jokes from a CSV with a ``Joke`` column (and optionally ``Topic`` or ``Category``)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such jokes CSV")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from exc
    if "Joke" not in frame.columns:
        raise InputError(f"{path}: no `Joke` column (columns: {', '.join(frame.columns)})")
    topic_col = next((c for c in ("Topic", "topic", "Category", "category") if c in frame), None)
    topics = frame[topic_col] if topic_col else [""] * len(frame)
    rows = [
        (clean_text(joke), clean_text(topic) or None)
        for joke, topic in zip(frame["Joke"], topics, strict=True)
        if clean_text(joke)
    ]
    if not rows:
        raise InputError(f"{path}: no jokes")
    train, validation = _holdout(rows, seed)
    return TaskData(
        train=joke_examples(train),
        validation=joke_examples(validation),
        fingerprint=fingerprint_files([path]),
        files=[path],
    )


def _holdout(items: Sequence[T], seed: int) -> tuple[list[T], list[T]]:
    """Split off a small seeded validation share (none when there are too few items)."""
    if len(items) < 20:
        return list(items), []
    n_val = max(1, round(len(items) * HOLDOUT_FRACTION))
    order = np.random.default_rng(seed).permutation(len(items))
    val = set(order[:n_val].tolist())
    return [x for i, x in enumerate(items) if i not in val], [items[i] for i in sorted(val)]


def load_task(task: str, data: Path, seed: int) -> TaskData:
    """Examples for ``task`` from ``data`` (a prepared dataset dir, a PAWS TSV, a jokes CSV)."""
    if task == "chat":
        return load_chat(data)
    if task == "paraphrase":
        return load_paraphrase(data, seed)
    if task == "joke":
        return load_jokes(data, seed)
    raise InputError(f"--task {task}: unknown task (choose from {', '.join(TASKS)})")
