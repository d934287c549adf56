"""The models folder under retraining: promote, roll back, prune (retrain.models_folder)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from training.errors import InputError
from training.model.model_dir import resolve_current
from training.output_dirs import MODEL_KIND, stamp
from training.retrain import models_folder


class Folder:
    """A models folder in a temporary directory, filled with copies of the tiny chat model."""

    def __init__(self, root: Path, source: Path) -> None:
        self.root, self.source = root, source

    def model(self, name: str) -> Path:
        """A usable model directory, marked as friendbot's own (as training marks it)."""
        path = Path(shutil.copytree(self.source, self.root / name))
        stamp(path, MODEL_KIND)
        return path

    def candidate(self, run_id: int, minute: int) -> Path:
        when = datetime(2024, 5, 1, 4, minute, tzinfo=UTC)
        return self.model(models_folder.candidate_name(run_id, when))


@pytest.fixture
def folder(tmp_path: Path, tiny_model_dir: Path) -> Folder:
    return Folder(tmp_path, tiny_model_dir)


def test_candidate_names_sort_by_time_and_match_the_pattern() -> None:
    name = models_folder.candidate_name(7, datetime(2024, 5, 1, 4, 0, 9, tzinfo=UTC))
    assert name == "retrain-0007-20240501T040009"
    assert models_folder.CANDIDATE_PATTERN.match(name)
    assert not models_folder.CANDIDATE_PATTERN.match(name + ".partial")


def test_promote_keeps_the_replaced_model_as_previous(tmp_path: Path, folder: Folder) -> None:
    first, second = folder.candidate(1, 0), folder.candidate(2, 1)
    assert models_folder.promote(tmp_path, first) is None
    assert resolve_current(tmp_path) == first.resolve()
    assert models_folder.resolve_previous(tmp_path) is None

    assert models_folder.promote(tmp_path, second) == first.resolve()
    assert resolve_current(tmp_path) == second.resolve()
    assert models_folder.resolve_previous(tmp_path) == first.resolve()
    # relative links: the whole folder can move
    assert not (tmp_path / "previous").readlink().is_absolute()


def test_rollback_twice_rolls_forward_again(tmp_path: Path, folder: Folder) -> None:
    first, second = folder.candidate(1, 0), folder.candidate(2, 1)
    models_folder.promote(tmp_path, first)
    models_folder.promote(tmp_path, second)

    old, new = models_folder.rollback(tmp_path)
    assert (old, new) == (second.resolve(), first.resolve())
    assert resolve_current(tmp_path) == first.resolve()
    assert models_folder.resolve_previous(tmp_path) == second.resolve()

    models_folder.rollback(tmp_path)
    assert resolve_current(tmp_path) == second.resolve()


def test_rollback_to_a_named_directory(tmp_path: Path, folder: Folder) -> None:
    hand = folder.model("hand-trained")
    models_folder.promote(tmp_path, folder.candidate(1, 0))
    models_folder.rollback(tmp_path, hand)
    assert resolve_current(tmp_path) == hand.resolve()


def test_rollback_without_previous_or_to_a_non_model_is_a_clear_error(
    tmp_path: Path, folder: Folder
) -> None:
    models_folder.promote(tmp_path, folder.candidate(1, 0))
    with pytest.raises(InputError, match="no previous model"):
        models_folder.rollback(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a model directory"):
        models_folder.rollback(tmp_path, tmp_path / "empty")


def test_rollback_refuses_a_broken_model_and_changes_nothing(
    tmp_path: Path, folder: Folder
) -> None:
    first, second = folder.candidate(1, 0), folder.candidate(2, 1)
    models_folder.promote(tmp_path, first)
    models_folder.promote(tmp_path, second)
    # config.json is there (all rollback used to check), the tokenizer vocabulary is not
    (first / "tokenizer.json").unlink()

    with pytest.raises(InputError) as err:
        models_folder.rollback(tmp_path)

    message = str(err.value)
    assert "no tokenizer vocabulary" in message and "nothing was changed" in message
    assert "\n" not in message
    assert resolve_current(tmp_path) == second.resolve()
    assert models_folder.resolve_previous(tmp_path) == first.resolve()


def test_prune_keeps_the_newest_and_never_current_previous_or_foreign_dirs(
    tmp_path: Path, folder: Folder
) -> None:
    runs = [folder.candidate(i, i) for i in range(1, 7)]
    hand = folder.model("demo-model")
    models_folder.promote(tmp_path, runs[0])  # oldest in service...
    models_folder.promote(tmp_path, runs[1])
    models_folder.rollback(tmp_path)  # ...rolled back: runs[0] current, runs[1] previous

    removed = models_folder.prune(tmp_path, keep=3)

    assert set(removed) == {runs[2], runs[3], runs[4]}
    left = set(models_folder.candidates(tmp_path))
    assert left == {runs[0], runs[1], runs[5]}
    assert hand.is_dir()
    assert resolve_current(tmp_path) == runs[0].resolve()


def test_prune_never_deletes_a_candidate_holding_files_friendbot_did_not_write(
    tmp_path: Path, folder: Folder
) -> None:
    runs = [folder.candidate(i, i) for i in range(1, 4)]
    (runs[0] / "my-notes.txt").write_text("keep me")
    unmarked = tmp_path / models_folder.candidate_name(9, datetime(2024, 4, 1, tzinfo=UTC))
    unmarked.mkdir()
    (unmarked / "config.json").write_text("{}")

    removed = models_folder.prune(tmp_path, keep=1)

    assert removed == [runs[1], runs[2]]  # the rest are not provably retraining's own
    assert (runs[0] / "my-notes.txt").read_text() == "keep me"
    assert (unmarked / "config.json").exists()
