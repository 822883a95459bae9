"""Breeding methods: how a child's initial weights are made from its parents.

One file per method, registered by a decorator. The registry refuses duplicates and
lists the known names on a miss; metadata lives on the entry so cards and checks never
special-case a method.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

from ..errors import StudbookError


@dataclass(frozen=True)
class Method:
    name: str
    breed: Callable  # (recipe, parents: list[Path], out_dir: Path) -> dict of facts
    min_parents: int
    max_parents: int | None
    base_model_relation: str | None  # Hugging Face card vocabulary; None for founders
    deterministic: bool
    description: str


_REGISTRY: dict[str, Method] = {}


def register(name: str, *, min_parents: int, max_parents: int | None,
             base_model_relation: str | None, deterministic: bool = True,
             description: str = "") -> Callable:
    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"breeding method '{name}' is registered twice")
        _REGISTRY[name] = Method(name, fn, min_parents, max_parents, base_model_relation,
                                 deterministic, description or (fn.__doc__ or "").strip())
        return fn
    return wrap


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def known() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str, file: str | None = None, key: str = "method") -> Method:
    _load_all()
    if name not in _REGISTRY:
        raise StudbookError(f"unknown method '{name}' (known: {', '.join(sorted(_REGISTRY))})",
                            file=file, key=key)
    return _REGISTRY[name]
