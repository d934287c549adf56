"""Every package the code imports is a declared dependency with a range in pyproject.toml.

A release that breaks us must be kept out by an upper bound (and caught by CI, which installs
the newest versions the ranges allow), and a package we import only because something else
happens to pull it in is one upstream change away from an ImportError on a user's machine.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
OWN = {"bot", "training", "storage", "tests"}
# Declared for what other packages do with them, never imported by us: no upper bound needed
# beyond what the importing package sets.
UNBOUNDED = {"tokenizers"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return {normalized(r.name): r for r in map(Requirement, project["dependencies"] + extras)}


def imported_top_level() -> set[str]:
    names: set[str] = set()
    for package in ("bot", "training", "storage"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names - OWN - set(sys.stdlib_module_names)


def test_every_imported_package_is_declared() -> None:
    dists = packages_distributions()
    missing = {
        module: dists.get(module, ["(not installed)"])
        for module in imported_top_level()
        if not any(normalized(d) in declared() for d in dists.get(module, []))
    }
    assert not missing, f"imported but not in pyproject.toml: {missing}"


def test_every_dependency_has_a_lower_and_an_upper_bound() -> None:
    for name, requirement in declared().items():
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators, f"{requirement}: no lower bound"
        if name not in UNBOUNDED:
            assert "<" in operators, f"{requirement}: no upper bound"
