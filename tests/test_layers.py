"""The declared layering, checked on every import statement of the package (module level and inside
functions alike, read with ``ast``): a module imports its own package, the floors below, and
nothing above or beside it. The package root is the roof (it re-exports the public API): no module
imports it back. README's "Architecture" describes the same floors."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "imgfeat_cli"

#: The floors, bottom first. Packages on one floor are siblings: they may not import each other.
#: ``training`` sits above ``retrieval``: it scores checkpoints with retrieval's metrics.
FLOORS: List[List[str]] = [["common"], ["imaging"], ["models"], ["pipeline"], ["datasets"],
                           ["retrieval", "distributed"], ["training"], ["reports"], ["api"], ["serve"], ["cli"]]
#: Modules of the root itself (``imgfeat_cli/X.py``) and their floor.
ROOT_MODULES = {"__init__": "roof", "__main__": "cli"}
#: Third-party packages that belong to the command line only.
CLI_ONLY = ("typer", "rich", "click")


def floor_of(package: str) -> int:
    for i, names in enumerate(FLOORS):
        if package in names:
            return i
    raise KeyError(package)


def imports_of(path: Path, module: str) -> Iterator[Tuple[int, str]]:
    """(line, imported module) for every import statement in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from imgfeat_cli import retrieval` imports the package retrieval
                yield node.lineno, f"{base}.{alias.name}" if base == "imgfeat_cli" else base


def violations(root: Path, name: str = "imgfeat_cli") -> List[str]:
    """Every import of ``root`` (a package folder) that the floors do not allow, as ``file:line``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        module = ".".join([name, *rel.parts]).removesuffix(".__init__")
        mine = rel.parts[0] if len(rel.parts) > 1 else ROOT_MODULES.get(rel.parts[0], "common")
        for line, target in imports_of(path, module):
            why = _why_not(mine, target, name)
            if why:
                found.append(f"{path.relative_to(root.parent)}:{line}: {module} imports {target} ({why})")
    return found


def _why_not(mine: str, target: str, name: str) -> Optional[str]:
    top = target.split(".")[0]
    if top in CLI_ONLY and mine not in ("cli",):
        return "typer/rich/click belong to the command line"
    if top != name:
        return None
    parts = target.split(".")
    if len(parts) == 1 or parts[1] in ("__version__",):
        return None if mine == "roof" else "the package root is the roof"
    other = parts[1]
    if mine == "roof" or other == mine:
        return None
    if other in ROOT_MODULES:
        return None if mine == "cli" else "an entry point module"
    declared = {n for names in FLOORS for n in names}
    if other not in declared:  # `from imgfeat_cli import create_model`: a name of the root's
        return "the package root is the roof"
    mine_floor, other_floor = floor_of(mine), floor_of(other)
    if other_floor > mine_floor:
        return f"{other} is above {mine}"
    if other_floor == mine_floor:
        return f"{other} is a sibling of {mine}"
    return None


def test_every_import_follows_the_floors():
    found = violations(PACKAGE)
    assert not found, "\n".join(found)


def test_no_command_imports_another_command():
    """cli/ modules that register a command only parse, call one entry point and render: what two
    of them share lives in a shared cli module (common, embedopts, render, helpdoc, progress)."""
    commands = {p.stem for p in (PACKAGE / "cli").glob("*.py") if "def register(" in p.read_text(encoding="utf-8")}
    found = []
    for name in sorted(commands):
        for line, target in imports_of(PACKAGE / "cli" / f"{name}.py", f"imgfeat_cli.cli.{name}"):
            other = target.split(".")[2] if target.startswith("imgfeat_cli.cli.") else None
            if other in commands and other != name:
                found.append(f"cli/{name}.py:{line} imports the command module cli/{other}.py")
    assert not found, "\n".join(found)


def test_every_package_is_declared():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    declared = {name for names in FLOORS for name in names}
    assert packages <= declared, f"declare {sorted(packages - declared)} in FLOORS (and README's Architecture)"


@pytest.mark.parametrize("planted,needle", [
    ("def f():\n    from imgfeat_cli.cli import app\n", "cli is above models"),
    ("def f():\n    import imgfeat_cli.retrieval.index\n", "retrieval is above models"),
    ("def f():\n    from ..pipeline import job\n", "pipeline is above models"),
    ("def f():\n    from imgfeat_cli import create_model\n", "the package root is the roof"),
    ("def f():\n    import typer\n", "typer/rich/click"),
])
def test_a_planted_function_level_upward_import_is_found(tmp_path, planted, needle):
    """The checker sees imports inside functions (the blind spot of an import-time check)."""
    root = tmp_path / "imgfeat_cli"
    for pkg in ("models", "pipeline", "cli", "retrieval"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "models" / "clean.py").write_text("from imgfeat_cli.common import errors\n")
    assert violations(root) == []
    (root / "models" / "bad.py").write_text("import os\n\n\n" + planted)
    found = violations(root)
    assert len(found) == 1 and needle in found[0] and "models/bad.py:5" in found[0], found


def test_siblings_may_not_import_each_other(tmp_path):
    root = tmp_path / "imgfeat_cli"
    for pkg in ("retrieval", "distributed"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "retrieval" / "x.py").write_text("def f():\n    from imgfeat_cli.distributed import folder\n")
    assert "sibling" in violations(root)[0]


def import_cycles(root: Path, name: str = "imgfeat_cli") -> List[List[str]]:
    """Groups of modules of ``root`` that import each other in a loop, through imports at module level
    or inside functions (``from pkg import module`` counts as importing that module)."""
    modules = {".".join([name, *p.relative_to(root).with_suffix("").parts]).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    edges = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges[module] |= {a.name for a in node.names} & modules.keys()
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, module, path)
                for alias in node.names:  # the submodule when one is named, else the module itself
                    sub = f"{base}.{alias.name}"
                    edges[module] |= {sub if sub in modules else base} & modules.keys()
        edges[module].discard(module)
    reach = {m: _reachable(m, edges) for m in modules}
    groups = {frozenset(o for o in reach[m] if m in reach[o]) | {m} for m in modules if m in reach[m]}
    return sorted(sorted(g) for g in groups)


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    if not node.level:
        return node.module or ""
    parts = (module if path.name == "__init__.py" else module.rsplit(".", 1)[0]).split(".")
    return ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))


def _reachable(start: str, edges: dict) -> set:
    seen, todo = set(), list(edges[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(edges[m])
    return seen


def test_no_modules_import_each_other_in_a_loop(tmp_path):
    """A loop ties modules so that neither can be read, tested or moved alone (pipeline.formats and
    pipeline.arrayparts were one, through a function-level import); the checker finds a planted one."""
    assert import_cycles(PACKAGE) == []
    root = tmp_path / "imgfeat_cli"
    (root / "pipeline").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "pipeline" / "__init__.py").write_text("")
    (root / "pipeline" / "a.py").write_text("from imgfeat_cli.pipeline.b import x\n")
    (root / "pipeline" / "b.py").write_text("def f():\n    from imgfeat_cli.pipeline import a\n")
    assert import_cycles(root) == [["imgfeat_cli.pipeline.a", "imgfeat_cli.pipeline.b"]]
