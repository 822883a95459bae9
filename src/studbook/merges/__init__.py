"""Full-weight merge methods: one file per method, registered by a decorator.

A merge method turns the same-named tensor of every input model into one output tensor.
It declares which parameters it reads (per input model, such as `weight` and `density`,
or shared, such as `normalize`), with defaults as in mergekit, so a mergekit-format
recipe means the same thing here. DARE's random pruning is PEFT's
(`peft.utils.merge_utils`); the rest follows mergekit operation for operation (see
`_task_vectors` for why magnitude pruning and sign election are not PEFT's) and is tested
against the published definitions and against mergekit's own tensors.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import StudbookError


@dataclass(frozen=True)
class MergeMethod:
    name: str
    # merge(base, tensors, per_model, shared) -> tensor. `tensors` excludes the base;
    # per_model[i] holds the resolved per-model parameters of tensors[i]. A method may
    # consume the `tensors` list (set entries to None) to free inputs early: pass a copy
    # if you still need it; the tensors themselves are never modified.
    merge: Callable[..., Any]
    needs_base: bool
    min_models: int
    max_models: int | None
    per_model: dict[str, Any] = field(default_factory=dict)  # name -> default (None: required)
    shared: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = True
    reference: str = ""


_REGISTRY: dict[str, MergeMethod] = {}


def register_merge(name: str, *, needs_base: bool, min_models: int = 1,
                   max_models: int | None = None, per_model: dict[str, Any] | None = None,
                   shared: dict[str, Any] | None = None, deterministic: bool = True,
                   reference: str = "") -> Callable:
    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"merge method '{name}' is registered twice")
        _REGISTRY[name] = MergeMethod(name, fn, needs_base, min_models, max_models,
                                      dict(per_model or {}), dict(shared or {}),
                                      deterministic, reference)
        return fn
    return wrap


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def known() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str, file: str | None = None, key: str = "merge_method") -> MergeMethod:
    _load_all()
    if name not in _REGISTRY:
        raise StudbookError(f"unknown merge method '{name}' (known: {', '.join(sorted(_REGISTRY))})",
                            file=file, key=key)
    return _REGISTRY[name]
