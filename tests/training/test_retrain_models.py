"""The models folder under retraining: promote, roll back, prune (training.model_store)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from training import model_store
from training.errors import InputError
from training.output_dirs import MODEL_KIND, stamp
from training.registry import resolve_current


def fake_model(models_dir: Path, name: str) -> Path:
    """A directory that passes for a finished model (config.json present, marked as ours)."""
    path = models_dir / name
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    stamp(path, MODEL_KIND)
    return path


def candidate(models_dir: Path, run_id: int, minute: int) -> Path:
    name = model_store.candidate_name(run_id, datetime(2024, 5, 1, 4, minute, tzinfo=UTC))
    return fake_model(models_dir, name)


def test_candidate_names_sort_by_time_and_match_the_pattern() -> None:
    name = model_store.candidate_name(7, datetime(2024, 5, 1, 4, 0, 9, tzinfo=UTC))
    assert name == "retrain-0007-20240501T040009"
    assert model_store.CANDIDATE_PATTERN.match(name)
    assert not model_store.CANDIDATE_PATTERN.match(name + ".partial")


def test_promote_keeps_the_replaced_model_as_previous(tmp_path: Path) -> None:
    first, second = candidate(tmp_path, 1, 0), candidate(tmp_path, 2, 1)
    assert model_store.promote(tmp_path, first) is None
    assert resolve_current(tmp_path) == first.resolve()
    assert model_store.resolve_previous(tmp_path) is None

    assert model_store.promote(tmp_path, second) == first.resolve()
    assert resolve_current(tmp_path) == second.resolve()
    assert model_store.resolve_previous(tmp_path) == first.resolve()
    # relative links: the whole folder can move
    assert not (tmp_path / "previous").readlink().is_absolute()


def test_rollback_twice_rolls_forward_again(tmp_path: Path) -> None:
    first, second = candidate(tmp_path, 1, 0), candidate(tmp_path, 2, 1)
    model_store.promote(tmp_path, first)
    model_store.promote(tmp_path, second)

    old, new = model_store.rollback(tmp_path)
    assert (old, new) == (second.resolve(), first.resolve())
    assert resolve_current(tmp_path) == first.resolve()
    assert model_store.resolve_previous(tmp_path) == second.resolve()

    model_store.rollback(tmp_path)
    assert resolve_current(tmp_path) == second.resolve()


def test_rollback_to_a_named_directory(tmp_path: Path) -> None:
    hand = fake_model(tmp_path, "hand-trained")
    model_store.promote(tmp_path, candidate(tmp_path, 1, 0))
    model_store.rollback(tmp_path, hand)
    assert resolve_current(tmp_path) == hand.resolve()


def test_rollback_without_previous_or_to_a_non_model_is_a_clear_error(tmp_path: Path) -> None:
    model_store.promote(tmp_path, candidate(tmp_path, 1, 0))
    with pytest.raises(InputError, match="no previous model"):
        model_store.rollback(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a model directory"):
        model_store.rollback(tmp_path, tmp_path / "empty")


def test_prune_keeps_the_newest_and_never_current_previous_or_foreign_dirs(
    tmp_path: Path,
) -> None:
    runs = [candidate(tmp_path, i, i) for i in range(1, 7)]
    hand = fake_model(tmp_path, "demo-model")
    model_store.promote(tmp_path, runs[0])  # oldest in service...
    model_store.promote(tmp_path, runs[1])
    model_store.rollback(tmp_path)  # ...rolled back: runs[0] current, runs[1] previous

    removed = model_store.prune(tmp_path, keep=3)

    assert set(removed) == {runs[2], runs[3], runs[4]}
    left = set(model_store.candidates(tmp_path))
    assert left == {runs[0], runs[1], runs[5]}
    assert hand.is_dir()
    assert resolve_current(tmp_path) == runs[0].resolve()


def test_prune_never_deletes_a_candidate_holding_files_friendbot_did_not_write(
    tmp_path: Path,
) -> None:
    runs = [candidate(tmp_path, i, i) for i in range(1, 4)]
    (runs[0] / "my-notes.txt").write_text("keep me")
    unmarked = tmp_path / model_store.candidate_name(9, datetime(2024, 4, 1, tzinfo=UTC))
    unmarked.mkdir()
    (unmarked / "config.json").write_text("{}")

    removed = model_store.prune(tmp_path, keep=1)

    assert removed == [runs[1], runs[2]]  # the rest are not provably retraining's own
    assert (runs[0] / "my-notes.txt").read_text() == "keep me"
    assert (unmarked / "config.json").exists()
