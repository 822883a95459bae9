"""Breeding methods: how a child's initial weights are made from its parents.

One file per method, registered by a decorator. The registry refuses duplicates and
lists the known names on a miss; metadata lives on the entry (parameter schema, what
kind of artifact it makes, which parents it accepts, its relation for cards, whether
its parents teach during training) so pipeline, checks and cards never special-case a
method.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict

from studbook.core import plugins
from studbook.core.errors import StudbookError


class NoParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Method:
    name: str
    # breed(ctx: BreedContext) -> dict of facts; writes initial weights into ctx.out_dir
    breed: Callable
    min_parents: int
    max_parents: int | None
    base_model_relation: str | None  # Hugging Face card vocabulary; None for founders
    relation: str  # studbook's own: founder, import, finetune, adapter, merge, distillation
    deterministic: bool
    description: str
    parameters: type[BaseModel] = NoParameters  # schema of the recipe's `parameters`
    parent_kinds: tuple[str, ...] = ("model",)  # artifact kinds accepted as parents
    kind: Callable[[Any], str] = lambda params: "model"  # artifact kind the child is
    teaches: bool = False  # parents[0] is a teacher during training (distillation)
    check: Callable | None = None  # extra compatibility check(ctx, file) before compute
    uses_model_spec: bool = False  # the child is built from the recipe's `model` group


_REGISTRY: dict[str, Method] = {}


def register(name: str, *, min_parents: int, max_parents: int | None,
             base_model_relation: str | None, relation: str, deterministic: bool = True,
             description: str = "", parameters: type[BaseModel] = NoParameters,
             parent_kinds: tuple[str, ...] = ("model",), kind: Callable[[Any], str] | None = None,
             teaches: bool = False, check: Callable | None = None,
             uses_model_spec: bool = False) -> Callable:
    def wrap(fn: Callable) -> Callable:
        add(Method(name, fn, min_parents, max_parents, base_model_relation, relation,
                   deterministic, description or (fn.__doc__ or "").strip().splitlines()[0],
                   parameters, parent_kinds, kind or (lambda params: "model"), teaches, check,
                   uses_model_spec))
        return fn
    return wrap


def add(method: Method) -> None:
    if method.name in _REGISTRY:
        raise ValueError(f"breeding method '{method.name}' is registered twice")
    _REGISTRY[method.name] = method


def _index() -> dict[str, str]:
    """method name -> module stem: the methods' own files, then one entry per merge method
    (all served by `merge.py`); found from the files' syntax, nothing imported."""
    from studbook.operators import merges

    entries = plugins.index(__file__, "register")
    for name in merges.known():
        if name in entries:
            raise ValueError(f"'{name}' is both a breeding method and a merge method")
        entries[name] = "merge"
    return entries


def known() -> list[str]:
    return sorted(_index())


def code_modules(name: str) -> list[str]:
    """The modules that hold a method's code: its own file and, for a merge, the merge's."""
    from studbook.operators import merges

    stem = _index()[name]
    modules = [f"{__name__}.{stem}"]
    if stem == "merge":
        modules.append(merges.module_name(name))
    return modules


def get(name: str, file: str | None = None, key: str = "method") -> Method:
    """The entry, importing only the file(s) that define it."""
    if name not in _REGISTRY:
        index = _index()
        if name not in index:
            raise StudbookError(f"unknown method '{name}' (known: {', '.join(sorted(index))})",
                                file=file, key=key)
        module = importlib.import_module(f"{__name__}.{index[name]}")
        if index[name] == "merge":
            module.register_merge_method(name)
    return _REGISTRY[name]
