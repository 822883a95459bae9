"""adapter_merge: LoRA adapters on one base combined by PEFT's `add_weighted_adapter`.

The parents must be adapters on the same base (by sha256). `linear` and the TIES/DARE
combinations need equal ranks; `cat` and the `*_svd` ones do not. With
`merge_into_base` the result is merged into the base (`merge_and_unload`) and the child
is a full model; otherwise it is a new adapter.
"""

from __future__ import annotations

import shutil
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from studbook.operators.methods import register

SAME_RANK = {"linear", "ties", "dare_ties", "dare_linear", "magnitude_prune"}


class AdapterMergeParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    combination_type: Literal["linear", "cat", "svd", "ties", "ties_svd", "dare_ties",
                              "dare_linear", "dare_ties_svd", "dare_linear_svd",
                              "magnitude_prune", "magnitude_prune_svd"] = "cat"
    weights: list[float] | None = Field(default=None, description="one per parent; default 1.0")
    density: float | None = Field(default=None, gt=0, le=1, description="TIES/DARE/prune only")
    svd_rank: int | None = Field(default=None, gt=0)
    merge_into_base: bool = False


def check_adapters(ctx, file: str) -> None:
    import json

    from studbook.core.errors import StudbookError

    first = ctx.parents[0]
    first_config = json.loads((first.path / "adapter_config.json").read_text())
    if ctx.params.weights is not None and len(ctx.params.weights) != len(ctx.parents):
        raise StudbookError(f"{len(ctx.params.weights)} weights for {len(ctx.parents)} parents",
                            file=file, key="parameters.weights")
    for index, other in enumerate(ctx.parents[1:], start=1):
        base_a, base_b = first.meta["base"], other.meta["base"]
        if base_a["sha256"] != base_b["sha256"]:
            raise StudbookError(f"adapters '{first.name}' and '{other.name}' differ in base: "
                                f"'{base_a['name']}' {base_a['sha256'][:12]}… vs '{base_b['name']}' "
                                f"{base_b['sha256'][:12]}…", file=file, key=f"parents[{index}]")
        config = json.loads((other.path / "adapter_config.json").read_text())
        if ctx.params.combination_type in SAME_RANK and config["r"] != first_config["r"]:
            raise StudbookError(f"adapters '{first.name}' and '{other.name}' differ in LoRA rank r: "
                                f"{first_config['r']} vs {config['r']} ('{ctx.params.combination_type}' "
                                "needs equal ranks; 'cat' or an '_svd' combination does not)",
                                file=file, key=f"parents[{index}]")


@register("adapter_merge", min_parents=2, max_parents=None, base_model_relation="adapter",
          relation="adapter", parameters=AdapterMergeParameters, parent_kinds=("adapter",),
          kind=lambda params: "model" if params.merge_into_base else "adapter", check=check_adapters,
          description="combine LoRA adapters on one base with PEFT's add_weighted_adapter")
def breed_adapter_merge(ctx) -> dict:
    import torch
    from peft import PeftModel

    from studbook.operators.artifacts import load_base_of, save_adapter, save_model
    from studbook.operators.tokenizer import load_tokenizer

    params, parents = ctx.params, ctx.parents
    torch.manual_seed(ctx.recipe.seed)  # DARE combinations draw masks
    names = [f"parent{i}" for i in range(len(parents))]
    model = PeftModel.from_pretrained(load_base_of(parents[0].path), str(parents[0].path),
                                      adapter_name=names[0])
    for name, parent in zip(names[1:], parents[1:]):
        model.load_adapter(str(parent.path), adapter_name=name)
    extra = {k: v for k, v in (("density", params.density), ("svd_rank", params.svd_rank)) if v is not None}
    model.add_weighted_adapter(adapters=names, weights=params.weights or [1.0] * len(names),
                               adapter_name="merged", combination_type=params.combination_type, **extra)
    model.set_adapter("merged")
    for name in names:
        model.delete_adapter(name)
    tokenizer = load_tokenizer(parents[0].path)
    base = parents[0].meta["base"]
    facts = {"combination_type": params.combination_type, "adapters": len(parents),
             "rank": model.peft_config["merged"].r}
    if params.merge_into_base:
        save_model(model.merge_and_unload(), tokenizer, ctx.out_dir)
        return {**facts, "merged_into": base["name"]}
    staging = ctx.out_dir.parent / (ctx.out_dir.name + ".staging")
    save_adapter(model, tokenizer, staging)  # PEFT writes a non-default adapter to a subfolder
    for item in (staging / "merged").iterdir():
        shutil.move(str(item), ctx.out_dir / item.name)
    for item in staging.iterdir():
        if item.is_file():
            shutil.move(str(item), ctx.out_dir / item.name)
    shutil.rmtree(staging)
    return {**facts, "base": base}
