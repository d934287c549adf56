"""Directories friendbot writes, and the one rule for replacing or deleting them.

Every command that writes a whole directory (``prepare``'s dataset, ``train``'s model and its
``OUT.partial/`` work area, ``evaluate``'s report, ``export-ct2``'s ``ct2/``, retraining's
run directories) builds it under a fresh hidden sibling, stamps it with a marker file and
renames it into place. A directory may later be replaced or deleted only when it is *provably*
such an output: it carries the marker of the same kind, and every entry in it is a file the
marker lists or a nested friendbot output with its own marker. Anything else (a user's folder
that happens to hold ``stats.json``, the working directory, a folder holding the very export
being read) is refused with one line, and nothing in it is touched.

Why a marker with a file list and not a name pattern: a pattern (``stats.json`` present) is
exactly what deleted a user's source tree once. The list also means a file the user dropped
into a model directory later (notes, a second export) makes it "not ours" and stops a
replacement, instead of silently going with it.

Writes are made durable before they are acknowledged: files are fsync'ed before the rename
that publishes them and the parent directory after it, so a power cut leaves the old output
or the new one, never a half-written one under the final name.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from training.errors import InputError

MARKER = ".friendbot-output.json"
TOOL = "friendbot"
FORMAT = 1

# The kinds of output, one per writer. A marker's kind must match to replace or delete.
DATASET_KIND = "dataset"  # friendbot prepare
MODEL_KIND = "model"  # friendbot train
PARTIAL_KIND = "train-partial"  # train's OUT.partial/ work area
EVAL_KIND = "eval"  # friendbot evaluate
CT2_KIND = "ct2"  # friendbot export-ct2
RUN_KIND = "retrain-run"  # a retraining run's work directory


# ---------------------------------------------------------------------------------------------
# Ownership


def stamp(directory: Path, kind: str, *, whole: bool = False) -> None:
    """Mark ``directory`` as a friendbot ``kind`` output listing what is in it now.

    ``whole``: a work area friendbot created empty and fills as it goes (``OUT.partial/``, a
    retraining run's directory): everything in it is ours, so no list is kept.
    """
    directory = Path(directory)
    files: list[str] | str = "*"
    if not whole:
        files = sorted(p.name for p in directory.iterdir() if p.name != MARKER)
    record = {"tool": TOOL, "kind": kind, "format": FORMAT, "files": files}
    write_durably(directory / MARKER, json.dumps(record, indent=2) + "\n")


def restamp(directory: Path) -> None:
    """Add what was written since into an existing output's file list (same kind)."""
    kind = owner_kind(directory)
    if kind is None:
        raise InputError(f"{directory}: not a friendbot output; refusing to write into it")
    stamp(directory, kind)


def owner_kind(directory: Path) -> str | None:
    """The kind recorded in ``directory``'s marker, or None when there is no valid one."""
    try:
        record = json.loads((Path(directory) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("tool") != TOOL:
        return None
    kind = record.get("kind")
    return kind if isinstance(kind, str) else None


def foreign_entries(directory: Path, kind: str) -> list[str]:
    """Entries of ``directory`` that prove it is not (only) a friendbot ``kind`` output.

    Empty means the directory may be replaced or deleted. A missing or different marker is
    reported as the marker itself, so the caller's message can say why.
    """
    directory = Path(directory)
    listed = _listed_files(directory, kind)
    if listed is None:
        return [MARKER]
    if listed == "*":
        return []
    foreign = []
    for entry in directory.iterdir():
        if entry.name == MARKER or entry.name in listed:
            continue
        if entry.is_dir() and not entry.is_symlink() and owner_kind(entry) is not None:
            continue  # a nested output (eval report, ct2 export) with its own marker
        foreign.append(entry.name)
    return sorted(foreign)


def _listed_files(directory: Path, kind: str) -> set[str] | str | None:
    """The marker's file list ("*" for a work area), or None without a matching marker."""
    try:
        record = json.loads((directory / MARKER).read_text(encoding="utf-8"))
        if (record["tool"], record["kind"], record["format"]) != (TOOL, kind, FORMAT):
            return None
        files = record["files"]
        return "*" if files == "*" else {str(name) for name in files}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_replaceable(out: Path, kind: str, what: str) -> None:
    """Refuse, before any work, an ``out`` that exists and is not provably ours to replace.

    ``what`` names the output in the message ("a `friendbot prepare` output").
    """
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InputError(f"{out}: exists and is not a directory; choose another output path")
    if not out.exists() or not any(out.iterdir()):
        return
    foreign = foreign_entries(out, kind)
    if foreign == [MARKER]:
        raise InputError(
            f"{out}: exists and is not {what} (no {MARKER} marker); "
            "nothing was changed: choose another output path or remove it yourself"
        )
    if foreign:
        listed = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InputError(
            f"{out}: holds files friendbot did not write ({listed}); "
            "nothing was changed: choose another output path or move them away"
        )


def check_location(out: Path, inputs: Iterable[Path] = ()) -> None:
    """Refuse outputs that would swallow the working directory or an input being read.

    Replacing ``out`` replaces everything under it, so ``out`` may not be the working
    directory or one of its parents (``.``, ``..``, ``/``), nor equal to or above an input.
    """
    target = Path(os.path.abspath(out))
    here = Path.cwd().resolve()
    resolved = target.resolve()
    if not target.name or resolved == here or resolved in here.parents:
        raise InputError(
            f"{out}: is the working directory or one of its parents; "
            "choose a new directory for the output (e.g. data/NAME)"
        )
    for path in inputs:
        source = Path(path).resolve()
        if source == resolved or resolved in source.parents:
            raise InputError(f"{out}: contains the input {path}; choose another output path")


def remove_owned(directory: Path, kind: str) -> bool:
    """Delete ``directory`` if it is provably a ``kind`` output; True if it was deleted.

    A directory that is missing, or not ours, is left alone (and False returned): callers
    clean up after themselves and must never take a user's files along. An empty directory
    holds nothing to lose and is removed.
    """
    directory = Path(directory)
    if directory.is_symlink() or not directory.is_dir():
        return False
    if not any(directory.iterdir()):
        directory.rmdir()  # nothing in it to lose (and rmdir fails if that changes meanwhile)
        return True
    if foreign_entries(directory, kind):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return True


# ---------------------------------------------------------------------------------------------
# Writing


def new_work_dir(out: Path, kind: str) -> Path:
    """A fresh, empty, hidden sibling of ``out`` to build it in (unique: never a user's)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-tmp-", dir=out.parent))


def make_work_dir(path: Path, kind: str) -> Path:
    """Create the work area ``path`` afresh; an old one is deleted only if it is ours.

    Refuses (InputError) when ``path`` exists and friendbot did not make it.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        check_replaceable(path, kind, f"a friendbot work directory ({kind})")
        remove_owned(path, kind)
    path.mkdir(parents=True, exist_ok=True)
    stamp(path, kind, whole=True)
    return path


@contextlib.contextmanager
def staged(out: Path, kind: str) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block succeeds.

    The caller has already refused an ``out`` that is not ours (``check_replaceable``); it is
    checked once more just before the swap, in case it changed while we worked.
    """
    tmp = new_work_dir(out, kind)
    try:
        yield tmp
        stamp(tmp, kind)
        publish(tmp, out, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: Path, out: Path, kind: str) -> None:
    """Make the finished, stamped ``tmp`` durable and swap it in as ``out``.

    With Linux's ``renameat2(RENAME_EXCHANGE)`` the swap is one atomic step: a reader (or a
    crash) sees the old directory or the new one, never none. Elsewhere the old one is renamed
    aside first. The old directory is deleted only after the swap, and only if it is ours.
    """
    tmp, out = Path(tmp), Path(out)
    if out.exists() and any(out.iterdir()):
        check_replaceable(out, kind, f"a friendbot {kind} output")
    fsync_tree(tmp)
    if out.is_dir() and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old output
    else:
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (data first, then the names)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new name in ``directory`` survive a power cut."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is synced
    finally:
        os.close(fd)


def write_durably(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2 (Linux >= 3.15); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
