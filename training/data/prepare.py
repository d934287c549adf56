"""``friendbot prepare``: Telegram exports (and stored messages) -> train/validation/test pairs.

The steps, top to bottom in :func:`prepare`:

1. read each export into normalized columns (``training.data.export``), plus ``extra_messages``;
2. drop duplicate (chat, message id) across files (the first file's copy decides, even when
   it was skipped there) and order by chat and time;
3. cut sessions at gaps of ``session_gap`` minutes, optionally merge bursts into turns; refuse
   fewer than two people to imitate (``training.data.speakers``);
4. give each session a split (seeded hash, stable when more data arrives);
5. with ``--memory``, find what each pair remembers of earlier sessions (``training.data.memory``);
   build pairs a window of turns at a time (a person's turns only as responses) and hand each
   window to a writer thread that appends row groups to the three parquet files;
6. write ``stats.json`` and move the finished directory into place.

Nothing is written to ``out_dir`` until everything succeeded: the files go to a temporary
sibling directory that is renamed at the end, so an error leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from training.data.columns import as_numpy
from training.data.cores import auto_workers
from training.data.export import (
    ChatSelector,
    ExportRead,
    NeedsChatChoice,
    check_file,
    choose_chat_error,
    list_chats,
    read_export,
)
from training.data.memory import PairMemory, build_memory, schema_with_memory
from training.data.messages import ChatMessage
from training.data.normalize import SCHEMA, Rules, SkippedIds, from_chat_messages, member_keys
from training.data.options import PrepareOptions
from training.data.pairs import PAIR_SCHEMA, build_pairs, context_starts, speaker_mask, window_lines
from training.data.sessions import (
    SPLITS,
    assign_splits,
    dedup_and_order,
    drop_later_copies,
    merge_bursts,
    session_starts,
)
from training.data.speakers import check_people
from training.errors import InputError
from training.output_dirs import DATASET_KIND, check_location, check_replaceable, staged

log = logging.getLogger(__name__)

WINDOW = 1 << 16  # turns per pair-building window (bounded memory: ~60 MB of pairs)
PROGRESS_MIN_BYTES = 16 << 20  # smaller inputs finish before a bar is worth drawing
PARALLEL_MIN_BYTES = 48 << 20  # smaller files are read faster than workers start


@dataclass
class PrepareStats:
    """What ``prepare`` read, skipped and wrote (also saved as ``stats.json``)."""

    files: list[dict[str, Any]] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    messages_read: int = 0
    extra_messages: int = 0  # of which came from ``extra_messages`` (the bot's history)
    skipped: dict[str, int] = field(default_factory=dict)
    messages_kept: int = 0
    turns: int = 0
    sessions: dict[str, int] = field(default_factory=dict)  # total and per split
    pairs: dict[str, int] = field(default_factory=dict)  # per split
    pairs_skipped: dict[str, int] = field(default_factory=dict)
    pairs_per_speaker: dict[str, int] = field(default_factory=dict)
    speakers: int = 0  # people whose turns may be responses (not deleted accounts, chats)
    warnings: list[str] = field(default_factory=list)  # read anyway, but worth a word
    seconds: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] | None = None  # ``--memory``: how many lines, from where

    @property
    def total_pairs(self) -> int:
        return sum(self.pairs.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare(
    exports: Sequence[Path],
    out_dir: Path,
    options: PrepareOptions | None = None,
    extra_messages: Iterable[ChatMessage] = (),
) -> PrepareStats:
    """Write ``out_dir/{train,validation,test}.parquet`` and ``stats.json`` (see module doc).

    ``extra_messages`` (the bot's stored history when retraining) go through the same rules,
    de-duplication, sessions and split as the exports' messages.
    """
    options = options or PrepareOptions()
    started = time.perf_counter()
    out_dir = Path(out_dir)
    exports = [Path(p) for p in exports]
    _check_inputs(exports, out_dir, extra_messages)
    with _collector_paused():
        return _prepare(exports, out_dir, options, extra_messages, started)


def _prepare(
    exports: list[Path],
    out_dir: Path,
    options: PrepareOptions,
    extra_messages: Iterable[ChatMessage],
    started: float,
) -> PrepareStats:
    """The steps of the module doc, once the inputs were checked (see :func:`prepare`)."""
    stats = PrepareStats(options=_options_dict(options))

    turns, starts = _sessions(_read(exports, extra_messages, options, stats), options, stats)
    persons = _check_speakers(turns, exports, stats, options)
    session_index, split_of_turn = _splits(turns, starts, options, stats)
    lo, eligible = _eligible(turns, starts, persons, exports, options, stats)
    memory = None
    if options.memory:
        is_train = split_of_turn == SPLITS.index("train")
        memory = build_memory(turns, starts, lo, eligible, is_train)
        stats.memory = memory.spec()
    with staged(out_dir, DATASET_KIND) as tmp:
        counts = _write_pairs(
            tmp, turns, lo, eligible, session_index, split_of_turn, options, memory
        )
        stats.pairs = {name: counts[0][i] for i, name in enumerate(SPLITS)}
        stats.pairs_per_speaker = dict(counts[1].most_common())
        stats.seconds = round(time.perf_counter() - started, 3)
        (tmp / "stats.json").write_text(json.dumps(stats.to_dict(), indent=2, ensure_ascii=False))
    return stats


def _read(
    exports: list[Path],
    extra_messages: Iterable[ChatMessage],
    options: PrepareOptions,
    stats: PrepareStats,
) -> pa.Table:
    """Steps 1-2: every input's normalized messages, one copy of each, in order.

    Every part remembers which input it came from, so the first input wins duplicates even
    when it skipped its copy (a media-only message is not kept from a later file).
    """
    rules = options.rules()
    sources = _Sources()
    with _progress(exports, options.progress) as progress:
        reads = [_read_one(path, options, rules, progress) for path in exports]
    _check_chat_choice(reads, options)
    skipped: Counter[str] = Counter()
    for index, read in enumerate(reads):
        sources.add(index, read.tables, read.skipped_ids)
        stats.messages_read += read.read
        skipped.update(read.skipped)
        warnings = read.warnings()
        stats.warnings.extend(warnings)
        stats.files.append(
            {
                "path": str(read.path),
                "bytes": read.path.stat().st_size,
                "layout": read.layout,
                "reader": read.reader,
                "messages": read.read,
                **({"invalid_utf8": read.invalid_utf8.to_dict()} if warnings else {}),
            }
        )
        stats.chats.extend(
            {"chat_id": c.chat_id, "name": c.name, "type": c.type, "messages": c.messages}
            for c in read.chats
        )
    extra = from_chat_messages(extra_messages, rules)
    stats.messages_read += extra.read
    stats.extra_messages = extra.read
    skipped.update(extra.skipped)
    sources.add(len(reads), [extra.table], [extra.skipped_ids])
    del reads

    messages, change = drop_later_copies(*sources.combined())
    skipped.update(change)
    del sources
    messages, duplicates = dedup_and_order(messages)
    skipped["duplicate"] += duplicates
    stats.skipped = dict(sorted((+skipped).items(), key=lambda kv: -kv[1]))
    stats.messages_kept = messages.num_rows
    if messages.num_rows == 0:
        raise InputError(f"{_names_of(exports)}: no usable messages ({_skip_summary(stats)})")
    return messages


def _sessions(
    messages: pa.Table, options: PrepareOptions, stats: PrepareStats
) -> tuple[pa.Table, np.ndarray]:
    """Step 3: turns (bursts merged if asked) and where each session starts."""
    chat = as_numpy(messages["chat_id"])
    starts = session_starts(chat, as_numpy(messages["date"]), options.session_gap * 60)
    turns = messages
    if options.merge_bursts > 0:
        turns, starts = merge_bursts(messages, starts, options.merge_bursts)
    stats.turns = turns.num_rows
    return turns, starts


def _splits(
    turns: pa.Table, starts: np.ndarray, options: PrepareOptions, stats: PrepareStats
) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: each turn's session index and split label, decided per session."""
    session_index = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    plan = assign_splits(
        as_numpy(turns["chat_id"])[first],
        as_numpy(turns["message_id"])[first],
        options.split,
        options.seed,
    )
    stats.sessions = {"total": len(first), **plan.counts()}
    return session_index, plan.labels[session_index]


def _eligible(
    turns: pa.Table,
    starts: np.ndarray,
    persons: np.ndarray,
    exports: list[Path],
    options: PrepareOptions,
    stats: PrepareStats,
) -> tuple[np.ndarray, np.ndarray]:
    """Step 5a: each turn's oldest context turn, and which turns become a pair's response."""
    lo = context_starts(starts, options.context)
    n_context = np.arange(len(lo)) - lo
    enough = n_context >= options.min_context
    chosen = member_keys(options.speakers) if options.speakers else None
    may_respond = speaker_mask(turns, chosen)
    eligible = enough & may_respond & persons
    stats.pairs_skipped = {
        "short_context": int((~enough).sum()),
        "not_speaker": int((enough & ~may_respond).sum()),
        "not_a_person": int((enough & may_respond & ~persons).sum()),
    }
    if not eligible.any():
        raise InputError(
            f"{_names_of(exports)}: no pairs to write: {stats.turns} turns, but none has "
            f"--min-context {options.min_context} turns of context"
            + (" and a sender among --speakers" if chosen else "")
            + " and a person (not a deleted account or a chat) as its sender"
        )
    return lo, eligible


class _Sources:
    """Kept and skipped messages of every input, with the input each came from."""

    def __init__(self) -> None:
        self.tables: list[pa.Table] = []
        self.source: list[np.ndarray] = []
        self.skipped: list[SkippedIds] = []
        self.skipped_source: list[np.ndarray] = []

    def add(self, index: int, tables: list[pa.Table], skipped: list[SkippedIds]) -> None:
        for table in tables:
            self.tables.append(table)
            self.source.append(np.full(table.num_rows, index, dtype=np.int32))
        for ids in skipped:
            self.skipped.append(ids)
            self.skipped_source.append(np.full(len(ids), index, dtype=np.int32))

    def combined(self) -> tuple[pa.Table, np.ndarray, SkippedIds, np.ndarray]:
        table = pa.concat_tables(self.tables) if self.tables else SCHEMA.empty_table()
        return (
            table,
            np.concatenate(self.source) if self.source else np.zeros(0, np.int32),
            SkippedIds.concat(self.skipped),
            np.concatenate(self.skipped_source) if self.skipped else np.zeros(0, np.int32),
        )


def _check_speakers(
    turns: pa.Table, exports: list[Path], stats: PrepareStats, options: PrepareOptions
) -> np.ndarray:
    """Which turns a person wrote; refuse a dataset of fewer than two people (unless allowed)."""
    chats = [(c["chat_id"], c["name"], c["type"]) for c in stats.chats]
    persons, people, problem = check_people(turns, chats)
    stats.speakers = len(people)
    if problem and not options.allow_single_speaker:
        raise InputError(
            f"{_names_of(exports)}: {problem}. Pass --allow-single-speaker to prepare it anyway"
        )
    return persons


def _check_inputs(exports: list[Path], out_dir: Path, extra: Iterable[ChatMessage]) -> None:
    """Fail before any work on inputs that cannot be read or an output that must not be hit."""
    if not exports and extra == ():
        raise InputError("prepare: no export files given")
    for path in exports:
        check_file(path)
    check_location(out_dir, exports)
    check_replaceable(out_dir, DATASET_KIND, "a `friendbot prepare` output")


def _read_one(path: Path, options: PrepareOptions, rules: Rules, progress: Any) -> ExportRead:
    workers = _workers(path, options.workers)
    try:
        return read_export(path, ChatSelector.of(options.chat), rules, progress.file(path), workers)
    except NeedsChatChoice:
        raise choose_chat_error(path) from None


def _workers(path: Path, wanted: int) -> int:
    """Decoding processes for ``path``: ``wanted``, or one per core free now (see cores.py).

    Small files never need them: they are read before the workers would have started. For
    a large file the choice is logged: it decides much of the time a read takes.
    """
    if wanted == 0 and path.stat().st_size < PARALLEL_MIN_BYTES:
        return 1
    workers = wanted or auto_workers()
    if path.stat().st_size >= PARALLEL_MIN_BYTES:
        how = "chosen" if wanted else "free cores now"
        log.info("%s: decoding in %d process(es) (%s)", path.name, workers, how)
    return workers


def _check_chat_choice(reads: list[ExportRead], options: PrepareOptions) -> None:
    """``--chat`` that matches nothing anywhere is a typo: say which chats exist."""
    if not options.chat or any(read.chats for read in reads):
        return
    known = [c.label for read in reads for c in list_chats(read.path)]
    raise InputError(
        f"{_names_of([r.path for r in reads])}: no chat matches --chat "
        f"{', '.join(options.chat)}; chats: {'; '.join(known[:20]) or 'none'}"
    )


def _write_pairs(
    out: Path,
    turns: pa.Table,
    lo: np.ndarray,
    eligible: np.ndarray,
    session_index: np.ndarray,
    split_of_turn: np.ndarray,
    options: PrepareOptions,
    memory: PairMemory | None = None,
) -> tuple[list[int], Counter[str]]:
    """Build pairs window by window; a writer thread per split appends them to its file.

    Arrow releases the GIL while compressing and writing, so writing window k overlaps with
    building window k+1, and the three files are written at the same time (writing was the
    slower side); only one window waits, which bounds memory.
    """
    columns = turns.select(["sender", "sender_id", "text", "chat_id", "message_id", "date"])
    sender_codes = pc.dictionary_encode(turns["sender"].combine_chunks())
    names = sender_codes.dictionary.to_pylist()
    codes = as_numpy(sender_codes.indices)
    per_split = [0, 0, 0]
    per_speaker = np.zeros(len(names), dtype=np.int64)
    writers = [
        pq.ParquetWriter(
            out / f"{name}.parquet",
            schema_with_memory(PAIR_SCHEMA) if memory else PAIR_SCHEMA,
            compression="snappy",  # zstd is 40% smaller but 1.6x slower to write
            use_dictionary=["sender", "sender_id"],
            write_statistics=["chat_id", "session_id", "message_id", "date"],
            store_schema=False,  # readers see plain strings, not views
        )
        for name in SPLITS
    ]
    n = turns.num_rows
    waiting: list[Future[None]] = []
    with ExitStack() as stack:
        pools = [stack.enter_context(ThreadPoolExecutor(max_workers=1)) for _ in SPLITS]
        advance = stack.enter_context(_progress_task(n, options))
        try:
            for a in range(0, n, WINDOW):
                b = min(n, a + WINDOW)
                rows = a + np.flatnonzero(eligible[a:b])
                if rows.size:
                    start = int(lo[rows[0]])  # lo never decreases: the window's oldest context
                    window = columns.slice(start, b - start)
                    lines = window_lines(window)
                    labels = split_of_turn[rows]
                    parts = []
                    for s in range(3):
                        picked = rows[labels == s]
                        if picked.size:
                            per_split[s] += picked.size
                            pairs = build_pairs(
                                window,
                                lines,
                                lo[picked] - start,
                                picked - start,
                                session_index[picked],
                            )
                            if memory:
                                pairs = memory.attach(pairs, picked)
                            parts.append((s, pairs))
                    per_speaker += np.bincount(codes[rows], minlength=len(names))
                    for done in waiting:
                        done.result()
                    waiting = [pools[s].submit(writers[s].write_table, t) for s, t in parts]
                advance(b - a)
            for done in waiting:
                done.result()
        finally:
            for pending in waiting:  # (after an error: no writer is closed mid-write)
                pending.exception()
            for writer in writers:
                writer.close()
    speaker_counts = Counter({name: int(c) for name, c in zip(names, per_speaker, strict=True)})
    return per_split, +speaker_counts


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off while preparing (and in the workers forked meanwhile).

    Reading makes millions of short-lived tuples and lists, and every 700 of them the
    collector walks the young objects, now and then every object the imports left behind
    (numpy, Arrow, typer): about 260 collections and 0.25 CPU s on the 1M-message export,
    for nothing: the data lives in numpy and Arrow buffers, and nothing here makes cycles
    worth collecting. Switched back on afterwards (if it was on), errors included.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _Progress:
    """Byte progress over all files (a rich bar, drawn only for large inputs)."""

    def __init__(self, bar: Any, task: Any, sizes: dict[Path, int]) -> None:
        self.bar, self.task = bar, task
        self.done_before = {}
        total = 0
        for path, size in sizes.items():
            self.done_before[path] = total
            total += size

    def file(self, path: Path) -> Callable[[int], None] | None:
        if self.bar is None:
            return None
        base = self.done_before[path]
        return lambda offset: self.bar.set(base + offset)


@contextmanager
def _progress(exports: list[Path], enabled: bool) -> Iterator[_Progress]:
    sizes = {path: path.stat().st_size for path in exports}
    if not enabled or sum(sizes.values()) < PROGRESS_MIN_BYTES:
        yield _Progress(None, None, sizes)
        return
    from training.progress import progress

    bar = progress(sum(sizes.values()), "reading", unit="B")
    try:
        yield _Progress(bar, None, sizes)
    finally:
        bar.close()


@contextmanager
def _progress_task(turns: int, options: PrepareOptions) -> Iterator[Callable[[int], None]]:
    if not options.progress or turns < 200_000:
        yield lambda _n: None
        return
    from training.progress import progress

    bar = progress(turns, "writing pairs")
    try:
        yield bar.update
    finally:
        bar.close()


def _options_dict(options: PrepareOptions) -> dict[str, Any]:
    skip = ("progress", "workers")  # how, not what: they do not change the dataset
    return {f.name: getattr(options, f.name) for f in fields(options) if f.name not in skip}


def _names_of(paths: Sequence[Path]) -> str:
    return ", ".join(str(p) for p in paths) or "prepare"


def _skip_summary(stats: PrepareStats) -> str:
    parts = [f"{n} {reason}" for reason, n in stats.skipped.items()]
    return f"{stats.messages_read} read" + (f"; skipped: {', '.join(parts)}" if parts else "")
