"""The code a stage runs, derived from the code: DVC dependencies that cannot drift.

A stage's code is its entry script, the library module holding its body, and that
module's import closure inside `studbook`: every `import`/`from … import` of a studbook
module anywhere in a file (function-level imports included — they run when the stage
does), followed transitively, plus the parent packages' `__init__.py` that Python runs
on the way. Plug-ins imported by name (a breeding or merge method) are added by the
generation that uses them (`methods.code_modules`). Files a module reads at run time
(a Jinja template) are declared beside the code that reads them, as a module-level
`DATA_FILES = ("templates/x.j2", ...)` (paths relative to the package), and followed too.

Dependencies are listed file by file (a folder would also cover files the stage never
runs: adding one would re-run it). A test checks that every shipped `dvc.yaml` lists
exactly this set, and `studbook refresh` rewrites them.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "studbook"


def package_dir(root: Path) -> Path:
    return root / "src" / PACKAGE


def _module_file(root: Path, module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root / "src" / Path(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root: Path, file: Path) -> list[str]:
    """The package a file's relative imports start from: its folder (for `__init__.py` too)."""
    return list(file.relative_to(root / "src").parent.parts)


@lru_cache(maxsize=None)
def _direct(root: Path, file: Path) -> tuple[Path, ...]:
    """Files `file` imports or reads directly (studbook modules and declared data files)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    package = _package_of(root, file) if file.is_relative_to(root / "src") else []
    found: set[Path] = set()

    def add(module: str) -> None:
        target = _module_file(root, module)
        if target is not None:
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            add(module)
            for alias in node.names:  # `from studbook.x import y` where y is a submodule
                add(f"{module}.{alias.name}")
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DATA_FILES"
                                                  for t in node.targets):
            for element in getattr(node.value, "elts", []):
                found.add(package_dir(root) / element.value)
    closure = set()
    for target in found:  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        closure.add(target)
        parent = target.parent
        while parent.is_relative_to(package_dir(root)):
            init = parent / "__init__.py"
            if init.is_file():
                closure.add(init)
            parent = parent.parent
    return tuple(sorted(closure))


def closure(root: str | Path, entries: list[str | Path], modules: list[str] = ()) -> set[Path]:
    """Every file reached from the entry files and the named modules, transitively."""
    root = Path(root).resolve()
    todo = [(root / e).resolve() for e in entries]
    todo += [f for f in (_module_file(root, m) for m in modules) if f is not None]
    seen: set[Path] = set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        if file.suffix == ".py":
            todo.extend(_direct(root, file))
    return seen


def stage_code(root: str | Path, kind: str, modules: list[str] = ()) -> list[str]:
    """The dependencies of stage `kind`'s code: `stages/KIND.py`, its closure, plug-ins."""
    root = Path(root).resolve()
    return sorted(str(f.relative_to(root)) for f in closure(root, [f"stages/{kind}.py"], list(modules)))
