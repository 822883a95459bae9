"""extract_lora: a full-weight child stored as a LoRA adapter on its parent (mergekit-extract-lora).

Parents, in this order: `[child, parent]` — `parents[0]` is the full model to compress
(typically a fine-tune or a merge of `parents[1]`), `parents[1]` its parent, which becomes
the adapter's base (pinned by sha256, like any adapter). The child's weight deltas are
decomposed by truncated SVD (`max_rank`, or the singular values above the absolute
threshold `sv_epsilon`) with mergekit's maths and PEFT's layout; embeddings and norms
are saved at full rank (`modules_to_save`). The facts say what was kept: rank, modules
decomposed and kept whole, adapter and full-model bytes, and the discarded
singular-value energy (the squared relative error of the decomposed deltas).
See `studbook.operators.extract`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from studbook.operators.methods import register


class ExtractLoraParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_rank: int = Field(default=128, gt=0, description="largest rank of any module's factors")
    sv_epsilon: float = Field(default=0.0, ge=0, description=(
        "keep only singular values above this absolute threshold (0: keep max_rank of them)"))
    distribute_scale: bool = Field(default=True, description=(
        "A = sqrt(S) Vh and B = U sqrt(S); false: A = S Vh and B = U"))
    embed_lora: bool = Field(default=False, description=(
        "decompose the embeddings too (else they are saved at full rank)"))
    modules_to_save: list[str] = Field(default_factory=list, description=(
        "module names (full, or the last component) saved at full rank"))
    include: list[str] | None = Field(default=None, description=(
        "regexes: only modules matching one are decomposed or saved"))
    exclude: list[str] = Field(default_factory=list, description="regexes: modules left out")
    skip_undecomposable: bool = Field(default=False, description=(
        "leave out norms and other non-Linear weights instead of saving them at full rank"))

    @field_validator("include", "exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("include", "exclude")
    @classmethod
    def _compiles(cls, value):
        for pattern in value or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"'{pattern}' is not a regular expression: {exc}") from None
        return value


def _options(params: ExtractLoraParameters) -> dict:
    return {"max_rank": params.max_rank, "sv_epsilon": params.sv_epsilon,
            "distribute_scale": params.distribute_scale, "embed_lora": params.embed_lora,
            "modules_to_save": list(params.modules_to_save), "include": params.include,
            "exclude": list(params.exclude), "skip_undecomposable": params.skip_undecomposable}


def _located(exc, file: str):
    """A library error re-raised naming the recipe: a parameter's key under `parameters.`."""
    from studbook.core.errors import StudbookError

    name = (exc.key or "").split("[")[0]
    if name in ExtractLoraParameters.model_fields:
        return StudbookError(exc.detail, file=file, key=f"parameters.{exc.key}")
    if exc.file:
        return exc
    return StudbookError(exc.detail, file=file, key="parents")


def check_pair(ctx, file: str) -> None:
    """Before compute: the plan from the configs and headers (both shapes of every
    decomposed weight, something left to decompose)."""
    from studbook.core.errors import StudbookError
    from studbook.operators.extract import plan_extraction

    child, parent = ctx.parents
    options = _options(ctx.params)
    options.pop("sv_epsilon")
    options.pop("distribute_scale")
    try:
        plan = plan_extraction(child.path, parent.path, **options)
    except StudbookError as exc:
        raise _located(exc, file) from None
    if not any(entry.action == "lora" for entry in plan.entries):
        kinds = sorted({e.module_type for e in plan.entries if e.reason == "undecomposable"})
        raise StudbookError(f"nothing to decompose in '{child.name}': every module is saved at full "
                            "rank or left out (an adapter would be the whole model)"
                            + (f"; not decomposable: {', '.join(kinds)}" if kinds else ""),
                            file=file, key="parameters.include" if ctx.params.include else "parents[0]")


@register("extract_lora", min_parents=2, max_parents=2, base_model_relation="adapter",
          relation="adapter", parameters=ExtractLoraParameters, kind=lambda params: "adapter",
          check=check_pair,
          description="LoRA adapter extracted from a full child (parents[0]) and its parent "
                      "(parents[1], the base): truncated SVD of the weight deltas, as mergekit-extract-lora")
def breed_extract_lora(ctx) -> dict:
    from studbook.core.errors import StudbookError
    from studbook.operators.extract import extract_lora

    child, parent = ctx.parents
    try:
        facts = extract_lora(child.path, parent.path, ctx.out_dir, atomic=False, **_options(ctx.params))
    except StudbookError as exc:
        raise _located(exc, ctx.recipe_file) from None
    return {**facts, "child": {"name": child.name, "sha256": child.sha256},
            "base": {"name": parent.name, "path": str(parent.path), "sha256": parent.sha256}}
