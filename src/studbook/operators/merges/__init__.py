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
from dataclasses import dataclass, field
from typing import Any, Callable

from studbook.core import plugins
from studbook.core.errors import StudbookError


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


def index() -> dict[str, str]:
    """merge method name -> the module (file stem) that registers it; nothing imported."""
    return plugins.index(__file__, "register_merge")


def known() -> list[str]:
    return sorted(index())


def module_name(name: str) -> str:
    return f"{__name__}.{index()[name]}"


def get(name: str, file: str | None = None, key: str = "merge_method") -> MergeMethod:
    """The entry, importing only the file that registers it."""
    if name not in _REGISTRY:
        if name not in index():
            raise StudbookError(f"unknown merge method '{name}' (known: {', '.join(known())})",
                                file=file, key=key)
        importlib.import_module(module_name(name))
    return _REGISTRY[name]
