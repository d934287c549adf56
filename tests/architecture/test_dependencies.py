"""The dependency rules of docs/architecture.md, checked on the code itself.

Every import (module level or inside a function) and every child process launched as
``python -m PACKAGE`` counts as a dependency: a package that launches ``-m bot.cli`` needs the
bot installed just as much as one that imports it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "training", "storage")

# (importer prefix, forbidden prefix): the importer may not depend on the forbidden package.
FORBIDDEN = [
    ("storage", "bot"),
    ("storage", "training"),
    ("training", "bot"),
    ("training.data", "training.model"),
    ("training.data", "training.retrain"),
    ("training.data", "storage"),
    ("training.model", "training.data"),
    ("training.model", "training.retrain"),
    ("training.model", "storage"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def dependencies(path: Path, modules: dict[str, Path], launches: bool = True) -> set[str]:
    """Project modules that ``path`` imports, or (``launches``) runs with ``python -m``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif launches and isinstance(node, ast.List | ast.Tuple):
            items = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            for i, item in enumerate(items[:-1]):
                if item == "-m" and isinstance(items[i + 1], str):
                    names.add(items[i + 1])
    return {name for name in names if name in modules}


def graph(launches: bool = True) -> dict[str, set[str]]:
    modules = project_modules()
    return {name: dependencies(path, modules, launches) - {name} for name, path in modules.items()}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_packages_depend_one_way() -> None:
    violations = [
        f"{importer} -> {target}"
        for importer, targets in graph().items()
        for target in targets
        for src, forbidden in FORBIDDEN
        if within(importer, src) and within(target, forbidden)
    ]
    assert not violations, "forbidden dependencies:\n" + "\n".join(sorted(violations))


def test_no_import_cycles() -> None:
    """Imports only: a child process running the CLI is no cycle (nothing half-initialised)."""
    edges = graph(launches=False)
    cycles: list[list[str]] = []
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state[nxt] == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif state[nxt] == 0:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if state[node] == 0:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_rules_see_a_violation() -> None:
    """The checker itself: a planted ``-m bot.cli`` launch and import are both found."""
    source = 'import bot.cli\nARGV = ["python", "-m", "bot.cli", "train"]\n'
    planted = ROOT / "training" / "_planted_for_test.py"
    planted.write_text(source)
    try:
        found = dependencies(planted, project_modules())
    finally:
        planted.unlink()
    assert found == {"bot.cli"}


def test_every_package_says_what_it_owns_and_must_not_import() -> None:
    for init in sorted(ROOT.glob("*/**/__init__.py")):
        package = module_name(init)
        if package.split(".")[0] not in PACKAGES or "migrations" in package:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "Owns" in doc, f"{init}: the docstring must say what the package owns"
        assert "import" in doc.lower(), f"{init}: the docstring must say what it may not import"
