"""Full-weight merges: one breeding method per registered merge method (`studbook.operators.merges`).

The recipe's `parameters` are mergekit's format without `merge_method` (the recipe's
`method` names it); `model:` and `base_model:` name parent generations. Omitted
`models` means every parent except the base, with weight 1.0. Adapter parents are first
merged into their base (PEFT's `merge_and_unload`) so they can take part.
"""

from __future__ import annotations

import shutil
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from studbook.operators import merges
from studbook.operators.methods import Method, add


class MergeParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: list[dict[str, Any]] | None = None
    slices: list[dict[str, Any]] | None = None
    base_model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    # studbook's own: the output in shards of at most this many bytes ("5B", mergekit's
    # --out-shard-size), with model.safetensors.index.json
    out_shard_size: str | int | None = None
    method: ClassVar[str] = ""  # set per registered merge method (`register_merge_method`)

    def check_against(self, parents: list[str], file: str) -> None:
        """The whole mergekit config (ranges, weights, names) checked when the recipe is
        loaded: before compute, even before the parents are bred."""
        _check_config(self.mergekit_config(self.method, parents), parents, file)

    def mergekit_config(self, method: str, parents: list[str]) -> dict:
        models = self.models
        if self.slices is not None:
            base = self.base_model
        elif models is None:
            base = self.base_model or (parents[0] if merges.get(method).needs_base else None)
            weight = {"weight": 1.0} if "weight" in merges.get(method).per_model else {}
            models = [{"model": p, "parameters": dict(weight)} for p in parents if p != base]
        else:
            base = self.base_model
        data = {"merge_method": method, "parameters": self.parameters}
        data.update({"slices": self.slices} if self.slices is not None else {"models": models})
        for key in ("dtype", "out_dtype", "tokenizer_source"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if base:
            data["base_model"] = base
        return data


def _check_config(data: dict, names: list[str], file: str) -> None:
    from studbook.core.errors import StudbookError
    from studbook.operators.merge_config import parse_config

    config = parse_config(data, file=file, prefix="parameters")
    where = [(f"parameters.models[{i}].model", e.model) for i, e in enumerate(config.models or [])]
    for i, piece in enumerate(config.slices or []):
        where += [(f"parameters.slices[{i}].sources[{j}].model", s.model) for j, s in enumerate(piece.sources)]
        where += [(f"parameters.slices[{i}].base_model", piece.base_model)] if piece.base_model else []
    for key, model in where:
        if model not in names:
            raise StudbookError(f"'{model}' is not a parent (parents: {', '.join(names)})", file=file, key=key)
    if config.base_model and config.base_model not in names:
        raise StudbookError(f"base_model '{config.base_model}' is not a parent",
                            file=file, key="parameters.base_model")
    used = {model for _, model in where} | {config.base_model}
    for index, name in enumerate(names):
        if name not in used:
            raise StudbookError(f"parent '{name}' takes no part in the merge",
                                file=file, key=f"parents[{index}]")


def _checker(method_name: str):
    def check(ctx, file: str) -> None:
        names = [p.name for p in ctx.parents]
        _check_config(ctx.params.mergekit_config(method_name, names), names, file)
        if ctx.params.slices is None:  # (slices: the plan checks each layer it takes)
            _check_shapes(ctx.parents, file)
    return check


def _check_shapes(parents, file: str) -> None:
    from pathlib import Path

    from studbook.core.errors import StudbookError
    from studbook.operators.merging import check_same_tensors
    from studbook.operators.safetensors_io import read_header

    def shapes(parent):
        folder = Path(parent.meta["base"]["path"]) if parent.kind == "adapter" else parent.path
        return read_header(folder)[1]

    first = parents[0]
    reference = shapes(first)
    for other in parents[1:]:
        try:
            check_same_tensors(first.name, reference, other.name, shapes(other))
        except StudbookError as exc:
            raise StudbookError(f"parents {exc.detail}", file=file, key="parents") from None


def _breeder(method_name: str):
    def breed(ctx) -> dict:
        from studbook.operators.artifacts import load_artifact, save_model
        from studbook.operators.merge_config import parse_config
        from studbook.operators.merging import run_merge
        from studbook.core.runtime import progress
        from studbook.operators.tokenizer import load_tokenizer

        names = [p.name for p in ctx.parents]
        config = parse_config(ctx.params.mergekit_config(method_name, names), file=ctx.recipe_file,
                              prefix="parameters")
        scratch = ctx.out_dir.parent / (ctx.out_dir.name + ".parents")
        folders = {}
        for parent in ctx.parents:
            if parent.kind == "adapter":  # a full model is needed: merge the adapter into its base
                folders[parent.name] = scratch / parent.name
                save_model(load_artifact(parent.path), load_tokenizer(parent.path), folders[parent.name])
            else:
                folders[parent.name] = parent.path
        try:
            facts = run_merge(config, folders.__getitem__, ctx.out_dir, seed=ctx.recipe.seed,
                              out_shard_size=ctx.params.out_shard_size,
                              on_tensor=lambda i, n, t: progress(f"merge {i}/{n} {t}") if i % 10 == 0 or i == n else None)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return facts
    return breed


def register_merge_method(name: str) -> None:
    """Register the breeding method for merge method `name` (called by the registry)."""
    entry = merges.get(name)
    add(Method(
        name=name, breed=_breeder(name), min_parents=1 + int(entry.needs_base),
        max_parents=None if entry.max_models is None else entry.max_models + int(entry.needs_base),
        base_model_relation="merge", relation="merge", deterministic=entry.deterministic,
        description=f"full-weight {name} merge (mergekit format; {entry.reference})",
        parameters=type(f"{name.title().replace('_', '')}Parameters", (MergeParameters,),
                        {"method": name}),
        parent_kinds=("model", "adapter"), check=_checker(name)))
