"""Plug-in registries load one file per entry, found without importing the others.

An extension point (a breeding method, a merge method) is one file in a package that
registers itself with a decorator, `@register("name", ...)`. Finding which file holds a
name is done by reading the files' syntax trees, not by importing them all: a stage then
imports exactly the entry it uses, and its DVC dependencies (`codedeps`) name exactly
that file, so editing one merge method re-runs only the generations that use it.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=None)
def _scan(folder: str, decorator: str) -> tuple[tuple[str, str], ...]:
    found = []
    for file in sorted(Path(folder).glob("*.py")):
        if file.name.startswith("__"):
            continue
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == decorator \
                    and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, file.stem))
    return tuple(found)


def index(package_file: str, decorator: str) -> dict[str, str]:
    """registered name -> module stem, for the package whose `__init__.py` is `package_file`."""
    entries: dict[str, str] = {}
    for name, stem in _scan(str(Path(package_file).parent), decorator):
        if name in entries:
            raise ValueError(f"'{name}' is registered twice ({entries[name]}.py and {stem}.py)")
        entries[name] = stem
    return entries
