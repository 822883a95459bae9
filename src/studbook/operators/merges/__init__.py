"""Full-weight merge methods: one file per method, registered by a decorator.

A merge method turns the same-named tensor of every input model into one output tensor.
It declares which parameters it reads (per input model, such as `weight` and `density`,
or shared, such as `normalize`), with defaults as in mergekit, so a mergekit-format
recipe means the same thing here. Every method follows mergekit 0.1.5 operation for
operation (docs/design/mergekit_parity.md, section 2: PEFT's merge utilities differ from it
in pruning, rescaling and sign election, see `_task_vectors`) and is tested against
mergekit's own tensors (tests/test_merges.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from studbook.core import plugins
from studbook.core.errors import StudbookError


BASE_ROLES = ("required", "optional", "ignored")


@dataclass(frozen=True)
class MergeMethod:
    name: str
    # merge(base, tensors, per_model, shared) -> tensor, with mergekit's inputs:
    # - base "required"/"optional": `base` is the base tensor (None when an optional base is
    #   absent) and `tensors` the other models in config order;
    # - base "ignored": `base` is None and `tensors` every input, the base among them (mergekit
    #   appends an unlisted base_model last, and averages it in like any other model).
    # per_model[i] holds the resolved per-model parameters of tensors[i]. A method may
    # consume the `tensors` list (set entries to None) to free inputs early: pass a copy
    # if you still need it; the tensors themselves are never modified.
    merge: Callable[..., Any]
    base: str
    min_models: int
    max_models: int | None
    per_model: dict[str, Any] = field(default_factory=dict)  # name -> default (None: required)
    shared: dict[str, Any] = field(default_factory=dict)
    deterministic: bool = True
    reference: str = ""
    # the dtype written for inputs of dtype D (mergekit writes what the maths returns: a
    # method that promotes, such as arcee_fusion's float32 mask, changes the file's dtype)
    result_dtype: Callable[[Any], Any] | None = None

    @property
    def needs_base(self) -> bool:
        return self.base == "required"

    def output_dtype(self, dtype):
        return self.result_dtype(dtype) if self.result_dtype else dtype


_REGISTRY: dict[str, MergeMethod] = {}


def register_merge(name: str, *, base: str, min_models: int = 1,
                   max_models: int | None = None, per_model: dict[str, Any] | None = None,
                   shared: dict[str, Any] | None = None, deterministic: bool = True,
                   reference: str = "", result_dtype: Callable[[Any], Any] | None = None) -> Callable:
    """`min_models`/`max_models` count the `tensors` the method receives (see MergeMethod)."""
    if base not in BASE_ROLES:
        raise ValueError(f"merge method '{name}': base must be one of {BASE_ROLES}")

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"merge method '{name}' is registered twice")
        _REGISTRY[name] = MergeMethod(name, fn, base, min_models, max_models,
                                      dict(per_model or {}), dict(shared or {}),
                                      deterministic, reference, result_dtype)
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
