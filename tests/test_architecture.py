# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
"""The import rules of docs/architecture.md, checked on the source of fem_ml with ``ast`` (nothing is imported).

The layer table of the page is the rule: a module imports only modules of lower layers (inside the foundation
layer and inside a package, imports are allowed but must not form a cycle); no module uses another module's private
names; every module is on the page.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fem_ml"
PAGE = ROOT / "docs" / "architecture.md"

#: Violations allowed: none (the structure work of issue 13 removed the last ones). Never add one.
KNOWN_VIOLATIONS: frozenset[str] = frozenset()


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package's ``__init__`` under the package's name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def is_private(name: str) -> bool:
    """A name with a leading underscore that is not a dunder."""
    return name.startswith("_") and not name.startswith("__")


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], list[str]]:
    """The fem_ml modules that module ``name`` imports anywhere in its source, and its uses of private names.

    ``from X import y`` depends on ``X.y`` if that is a module, else on ``X``; ``import X`` on ``X``. Imports inside
    functions and under ``TYPE_CHECKING`` count. A private name is one with a leading underscore (not a dunder),
    imported from or looked up on another fem_ml module; private modules themselves are fine.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    deps: set[str] = set()
    private: list[str] = []
    aliases: dict[str, str] = {}  # local name -> the fem_ml module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "fem_ml":
                    deps.add(alias.name)
                    aliases[alias.asname or "fem_ml"] = alias.name if alias.asname else "fem_ml"
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, path, node)
            if base.split(".")[0] != "fem_ml":
                continue
            for alias in node.names:
                target = f"{base}.{alias.name}"
                if target in known:
                    deps.add(target)
                    aliases[alias.asname or alias.name] = target
                    continue
                deps.add(base)
                if is_private(alias.name) and base != name:
                    private.append(f"{name} imports the private name {alias.name} of {base}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            dotted = _dotted_name(node.value)
            head, *rest = (dotted or "").split(".")
            module = ".".join([aliases[head], *rest]) if head in aliases else None
            if module in known and module != name:
                private.append(f"{name} uses the private name {node.attr} of {module}")
    return {d for d in deps if d in known and d != name}, private


def _absolute(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` statement in module ``name``."""
    if not node.level:
        return node.module or ""
    parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _dotted_name(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attribute lookups on a name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted_name(node.value)
        return None if inner is None else f"{inner}.{node.attr}"
    return None


def layer_table(page: Path = PAGE) -> dict[str, int]:
    """The layer of each entry (``_mpi``, ``inverse``, ``fem_ml``, ``__main__`` ...) from the page's layer table."""
    layers: dict[str, int] = {}
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", page.read_text(), flags=re.MULTILINE)
    assert rows, f"{page} has no layer table (rows '| <layer> | `module`, ... | ... |')"
    for number, cell in rows:
        for entry in re.findall(r"`([\w.]+)`", cell):
            assert entry not in layers, f"{entry} is in two layers of {page.name}"
            layers[entry] = int(number)
    return layers


def entry_of(module: str) -> str:
    """The layer-table entry of a module: ``fem_ml``, or its first component below the package."""
    return "fem_ml" if module == "fem_ml" else module.split(".")[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node of a directed graph, each sorted."""

    def reach(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for succ in graph.get(stack.pop(), ()):
                if succ not in seen:
                    seen.add(succ)
                    stack.append(succ)
        return seen

    reachable = {node: reach(node) for node in graph}
    components = {
        frozenset({node} | {other for other in reachable[node] if node in reachable.get(other, ())}) for node in graph
    }
    return sorted(sorted(c) for c in components if len(c) > 1)


def violations(package: Path = PACKAGE, page: Path = PAGE) -> set[str]:
    """Every violation of the rules of the architecture page in the package's source."""
    known = modules(package)
    layers = layer_table(page)
    found: set[str] = set()
    allowed: dict[str, set[str]] = {}  # imports inside the foundation or a package: allowed, but without cycles
    for name, path in known.items():
        deps, private = imports(name, path, known)
        found.update(private)
        for dep in sorted(deps):
            mine, theirs = entry_of(name), entry_of(dep)
            if mine not in layers or theirs not in layers:
                continue  # reported by test_every_module_is_on_the_architecture_page
            if mine == theirs or layers[mine] == layers[theirs] == 0:
                allowed.setdefault(name, set()).add(dep)
            elif layers[theirs] > layers[mine]:
                found.add(f"{name} imports {dep} (layer {layers[mine]} imports layer {layers[theirs]})")
            elif layers[theirs] == layers[mine]:
                found.add(f"{name} imports {dep} (both in layer {layers[mine]})")
    found.update("import cycle among " + ", ".join(component) for component in cycles(allowed))
    return found


def test_import_rules():
    """No upward or sideways import, no cycle, no private name across modules, beyond the known violations."""
    found = violations()
    new = sorted(found - KNOWN_VIOLATIONS)
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not new, "violations of docs/architecture.md:\n  " + "\n  ".join(new)
    assert not gone, "fixed, so remove them from KNOWN_VIOLATIONS:\n  " + "\n  ".join(gone)


#: Rule 5 of docs/architecture.md: the libraries that take a second or more to import, and the only modules that may
#: import them when they are imported themselves (elsewhere, inside the functions that use them, or lazily).
HEAVY_AT_IMPORT: dict[str, frozenset[str]] = {
    "torch": frozenset({"fem_ml._mlp"}),
    "matplotlib": frozenset(),
    "scipy.stats": frozenset(),
    "sklearn": frozenset(),
}

#: Rule 5: the entry points of ``python -m fem_ml info``; they, and every fem_ml module they import when imported
#: (:func:`info_path`), must not import DOLFINx (nor PETSc) when imported.
INFO_ENTRY_POINTS = ("fem_ml", "fem_ml.__main__", "fem_ml.cli", "fem_ml.archive")


def imported_at_import(path: Path) -> set[str]:
    """The modules a source file imports when it is imported: not in functions, not under ``TYPE_CHECKING``."""

    def walk(statements: list[ast.stmt]) -> set[str]:
        found: set[str] = set()
        for node in statements:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                checking = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                found |= walk(node.orelse) | (set() if checking else walk(node.body))
            elif isinstance(node, ast.Try):
                found |= walk(node.body) | walk(node.orelse) | walk(node.finalbody)
                for handler in node.handlers:
                    found |= walk(handler.body)
            elif isinstance(node, ast.ClassDef | ast.With):
                found |= walk(node.body)
        return found

    return walk(ast.parse(path.read_text(), filename=str(path)).body)


def info_path(package: Path = PACKAGE) -> set[str]:
    """The fem_ml modules that :data:`INFO_ENTRY_POINTS` import when imported, followed to the end (the closure)."""
    known = modules(package)
    found: set[str] = set()
    todo = [name for name in INFO_ENTRY_POINTS if name in known]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(m for m in imported_at_import(known[name]) if m in known and m not in found)
    return found


def heavy_imports(package: Path = PACKAGE) -> set[str]:
    """Every import of a heavy library, or of DOLFINx on the ``info`` path, made when a module is imported."""
    found = set()
    on_info_path = info_path(package)
    for name, path in modules(package).items():
        imported = imported_at_import(path)
        for library, allowed in HEAVY_AT_IMPORT.items():
            if name not in allowed and any(m == library or m.startswith(library + ".") for m in imported):
                found.add(f"{name} imports {library} when it is imported")
        if name in on_info_path:
            found.update(
                f"{name} imports {m} when it is imported (python -m fem_ml info must not)"
                for m in imported
                if m.split(".")[0] in ("dolfinx", "petsc4py", "basix", "ufl")
            )
    return found


def test_heavy_libraries_are_imported_where_used():
    """torch only in ``fem_ml._mlp``; SciPy's statistics and matplotlib inside functions; no DOLFINx for ``info``."""
    assert sorted(heavy_imports()) == []
    assert imported_at_import(PACKAGE / "_mlp.py") >= {"torch"}  # the checker sees a module-level import
    # The info path is followed through the modules it imports (archive imports the regressors' modules).
    assert {"fem_ml.cli", "fem_ml.archive", "fem_ml._h5", "fem_ml.networks", "fem_ml.kernels"} <= info_path()
    assert "fem_ml.surrogate" not in info_path()  # imported by archive inside functions only


def test_every_module_is_on_the_architecture_page():
    """Each module is in the module table, and its entry (module or package) in exactly one layer."""
    known = modules()
    listed = set(re.findall(r"^\| `(fem_ml[\w.]*)` \|", PAGE.read_text(), flags=re.MULTILINE))
    assert sorted(set(known) - listed) == [], "modules missing from the module table of docs/architecture.md"
    assert sorted(listed - set(known)) == [], "the module table of docs/architecture.md lists unknown modules"
    layers = layer_table()
    entries = {entry_of(module) for module in known}
    assert sorted(entries - set(layers)) == [], "modules missing from the layer table of docs/architecture.md"
    assert sorted(set(layers) - entries) == [], "the layer table of docs/architecture.md lists unknown modules"


def test_the_checker_reports_what_the_rules_forbid(tmp_path):
    """On a small package: upward and sideways imports, private names, and cycles are reported, nothing else."""
    package = tmp_path / "fem_ml"
    (package / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "from fem_ml.top import run\n",
        "_base.py": "from fem_ml._util import helper\n",
        "_util.py": "def helper():\n    from fem_ml import _base\n",  # a cycle inside the foundation
        "low.py": "import fem_ml.top as t\n\n\ndef f():\n    return t._hidden\n",  # upward, and a private name
        "peer.py": "from fem_ml.low import f\n",  # sideways
        "top.py": "from fem_ml import _base\nfrom fem_ml.low import _secret\n\n_hidden = 1\n",  # private module: fine
        "sub/__init__.py": "from .a import x\n",
        "sub/a.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import b\nx = 1\n",
        "sub/b.py": "from fem_ml.sub.a import x\nfrom fem_ml.low import f\n",  # a cycle inside a package
    }
    for relative, source in sources.items():
        (package / relative).write_text(source)
    page = tmp_path / "architecture.md"
    page.write_text(
        "| 0 | `_base`, `_util` | x |\n| 1 | `low`, `peer` | x |\n| 2 | `top`, `sub` | x |\n| 3 | `fem_ml` | x |\n"
    )
    assert violations(package, page) == {
        "fem_ml.low imports fem_ml.top (layer 1 imports layer 2)",
        "fem_ml.low uses the private name _hidden of fem_ml.top",
        "fem_ml.peer imports fem_ml.low (both in layer 1)",
        "fem_ml.top imports the private name _secret of fem_ml.low",
        "import cycle among fem_ml._base, fem_ml._util",
        "import cycle among fem_ml.sub.a, fem_ml.sub.b",
    }
