from pathlib import Path

from training.model.model_dir import resolve_current, set_current


def test_current_switches_atomically_and_stays_relative(tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert resolve_current(models) is None
    first, second = models / "a", models / "b"
    first.mkdir(parents=True)
    second.mkdir()
    set_current(models, first)
    assert resolve_current(models) == first.resolve()
    set_current(models, second)
    assert resolve_current(models) == second.resolve()
    assert not (models / "current").readlink().is_absolute()
    assert sorted(p.name for p in models.iterdir()) == ["a", "b", "current"]
