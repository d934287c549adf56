"""Never destroy a user's files: outputs are replaced or deleted only when provably ours.

The commands run as a user runs them: the installed ``friendbot`` console script in a
subprocess, so what is tested is what a user's shell sees (exit status, one line, files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.errors import InputError
from training.output_dirs import (
    DATASET_KIND,
    MARKER,
    MODEL_KIND,
    check_location,
    check_replaceable,
    foreign_entries,
    make_work_dir,
    remove_owned,
    staged,
    stamp,
)

EXPORTS = Path(__file__).parent / "fixtures" / "exports"
FRIENDBOT = Path(sys.executable).with_name("friendbot")


def friendbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [str(FRIENDBOT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes, to prove nothing was touched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- prepare, as the bug report describes it ----------------------------------------------


def test_prepare_refuses_a_folder_with_stats_json_and_user_files(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "code.py").write_text("print('mine')\n")
    (project / "stats.json").write_text("{}")
    shutil.copy(EXPORTS / "single_chat.json", project / "result.json")
    before = snapshot(project)

    done = friendbot("prepare", "project/result.json", "--out", "project", cwd=tmp_path)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "project" in done.stderr
    assert snapshot(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no temp dirs left


def test_prepare_refuses_a_folder_with_stats_json_even_without_the_export(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    (out / "src" / "code.py").write_text("x = 1\n")
    (out / "stats.json").write_text("{}")
    before = snapshot(out)

    done = friendbot("prepare", str(EXPORTS / "single_chat.json"), "--out", "out", cwd=tmp_path)

    assert done.returncode == 2
    assert "not a `friendbot prepare` output" in done.stderr
    assert snapshot(out) == before


@pytest.mark.parametrize("out", [".", "./", "..", "here/.."])
def test_prepare_refuses_the_working_directory_and_its_parents(tmp_path: Path, out: str) -> None:
    work = tmp_path / "work"
    (work / "here").mkdir(parents=True)
    shutil.copy(EXPORTS / "single_chat.json", work / "result.json")
    before = snapshot(tmp_path)

    done = friendbot("prepare", "result.json", "--out", out, cwd=work)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "working directory" in done.stderr
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in work.iterdir()) == ["here", "result.json"]


def test_prepare_refuses_an_output_above_its_input(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    shutil.copy(EXPORTS / "single_chat.json", tmp_path / "exports" / "result.json")

    done = friendbot("prepare", "exports/result.json", "--out", "exports", cwd=tmp_path)

    assert done.returncode == 2
    assert "contains the input" in done.stderr
    assert (tmp_path / "exports" / "result.json").exists()


def test_prepare_replaces_its_own_earlier_output(tmp_path: Path) -> None:
    export = str(EXPORTS / "single_chat.json")
    first = friendbot("prepare", export, "--out", "data", "--min-context", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    marker = json.loads((tmp_path / "data" / MARKER).read_text())
    assert marker["kind"] == DATASET_KIND
    assert set(marker["files"]) == {"train.parquet", "validation.parquet", "test.parquet",
                                    "stats.json"}  # fmt: skip

    again = friendbot("prepare", export, "--out", "data", "--min-context", "1", cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["options"]["min_context"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_prepare_refuses_its_own_output_once_a_user_file_is_added(tmp_path: Path) -> None:
    export = str(EXPORTS / "single_chat.json")
    assert friendbot("prepare", export, "--out", "data", "--min-context", "0", cwd=tmp_path)
    (tmp_path / "data" / "notes.txt").write_text("mine")

    done = friendbot("prepare", export, "--out", "data", "--min-context", "0", cwd=tmp_path)

    assert done.returncode == 2
    assert "notes.txt" in done.stderr
    assert (tmp_path / "data" / "notes.txt").read_text() == "mine"


# --- train --overwrite and OUT.partial -----------------------------------------------------


def test_train_overwrite_refuses_a_directory_that_is_not_a_model_it_wrote(
    tmp_path: Path,
) -> None:
    export = str(EXPORTS / "single_chat.json")
    prep = friendbot("prepare", export, "--out", "data", "--min-context", "0", cwd=tmp_path)
    assert prep.returncode == 0, prep.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")

    done = friendbot(
        "train", "--data", "data", "--base-model", "tiny", "--out", "mine", "--overwrite",
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_train_refuses_a_partial_directory_it_did_not_make(tmp_path: Path) -> None:
    export = str(EXPORTS / "single_chat.json")
    prep = friendbot("prepare", export, "--out", "data", "--min-context", "0", cwd=tmp_path)
    assert prep.returncode == 0, prep.stderr
    (tmp_path / "model.partial").mkdir()
    (tmp_path / "model.partial" / "keep.txt").write_text("mine")

    done = friendbot("train", "--data", "data", "--base-model", "tiny", "--out", "model",
                     cwd=tmp_path)  # fmt: skip

    assert done.returncode == 2, done.stderr
    assert "model.partial" in done.stderr
    assert (tmp_path / "model.partial" / "keep.txt").read_text() == "mine"


# --- the rule itself ----------------------------------------------------------------------


def test_foreign_entries_need_the_right_marker_and_only_listed_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.parquet").write_bytes(b"x")
    assert foreign_entries(out, DATASET_KIND) == [MARKER]
    stamp(out, DATASET_KIND)
    assert foreign_entries(out, DATASET_KIND) == []
    assert foreign_entries(out, MODEL_KIND) == [MARKER]  # another command's output
    (out / "extra.txt").write_text("mine")
    assert foreign_entries(out, DATASET_KIND) == ["extra.txt"]
    (out / MARKER).write_text("{not json")
    assert foreign_entries(out, DATASET_KIND) == [MARKER]


def test_nested_outputs_with_their_own_marker_are_ours(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    stamp(model, MODEL_KIND)
    report = model / "eval-test"
    report.mkdir()
    (report / "eval.json").write_text("{}")
    assert foreign_entries(model, MODEL_KIND) == ["eval-test"]
    stamp(report, "eval")
    assert foreign_entries(model, MODEL_KIND) == []
    assert remove_owned(model, MODEL_KIND)
    assert not model.exists()


def test_remove_owned_leaves_anything_else_alone(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("a")
    link = tmp_path / "link"
    link.symlink_to(plain)
    stamp(plain, DATASET_KIND)
    (plain / "b.txt").write_text("b")  # added after the stamp

    assert not remove_owned(plain, DATASET_KIND)
    assert not remove_owned(link, DATASET_KIND)  # never through a symlink
    assert not remove_owned(tmp_path / "missing", DATASET_KIND)
    assert sorted(p.name for p in plain.iterdir()) == [MARKER, "a.txt", "b.txt"]


def test_staged_swaps_in_complete_output_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged(out, DATASET_KIND) as tmp:
        (tmp / "stats.json").write_text('{"v": 1}')
    assert json.loads((out / "stats.json").read_text()) == {"v": 1}

    with pytest.raises(RuntimeError), staged(out, DATASET_KIND) as tmp:
        (tmp / "stats.json").write_text('{"v": 2}')
        raise RuntimeError("crashed half way")
    assert json.loads((out / "stats.json").read_text()) == {"v": 1}

    with staged(out, DATASET_KIND) as tmp:
        (tmp / "stats.json").write_text('{"v": 3}')
    assert json.loads((out / "stats.json").read_text()) == {"v": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_refuses_to_swap_over_a_directory_that_changed_owner(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    with pytest.raises(InputError), staged(out, DATASET_KIND) as tmp:
        (tmp / "stats.json").write_text("{}")
    assert (out / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_make_work_dir_recreates_its_own_and_refuses_a_users(tmp_path: Path) -> None:
    work = make_work_dir(tmp_path / "w.partial", "train-partial")
    (work / "checkpoint").write_text("old")
    make_work_dir(work, "train-partial")
    assert sorted(p.name for p in work.iterdir()) == [MARKER]

    users = tmp_path / "u.partial"
    users.mkdir()
    (users / "keep").write_text("k")
    with pytest.raises(InputError):
        make_work_dir(users, "train-partial")
    assert (users / "keep").read_text() == "k"


def test_check_location_and_replaceable_messages(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="working directory"):
        check_location(Path("."))
    with pytest.raises(InputError, match="working directory"):
        check_location(tmp_path.parent)
    check_location(Path("data"))
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        check_replaceable(file, DATASET_KIND, "a dataset")
