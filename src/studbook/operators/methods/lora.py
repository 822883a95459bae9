"""lora: a low-rank adapter on one model parent, trained with PEFT (Hu et al. 2021).

The child is an adapter (`adapters/NAME/`, PEFT's layout), not a full model: it pins
its base by the sha256 of the base's weights, and `PeftModel.from_pretrained` loads it.
Which modules get adapters is PEFT's per-architecture default unless the recipe names
them (`parameters.target_modules`: module names, or 'all-linear').
"""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field

from studbook.operators.methods import register


class LoraParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rank: int = Field(default=8, gt=0, description="LoRA rank r")
    alpha: float = Field(default=16.0, gt=0, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: Union[str, list[str], None] = Field(default=None, description=(
        "PEFT target_modules: module names or 'all-linear'; unset, PEFT's default for the "
        "architecture (e.g. q_proj and v_proj on Llama, Qwen2 and Mistral)"))


def lora_config(params: LoraParameters):
    from peft import LoraConfig

    return LoraConfig(r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout,
                      target_modules=params.target_modules, task_type="CAUSAL_LM", bias="none")


def check_targets(ctx, file: str) -> None:
    """Unset target modules need PEFT to know the architecture (before any compute)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    from studbook.core.errors import StudbookError

    model_type = ctx.parents[0].config.get("model_type")
    if ctx.params.target_modules is None and model_type not in DEFAULTS:
        raise StudbookError(f"PEFT has no default LoRA target modules for a {model_type}; name them "
                            "(module names, or 'all-linear')", file=file, key="parameters.target_modules")


@register("lora", min_parents=1, max_parents=1, base_model_relation="adapter", relation="adapter",
          parameters=LoraParameters, kind=lambda params: "adapter", check=check_targets,
          description="LoRA adapter on the parent, trained with PEFT")
def breed_lora(ctx) -> dict:
    import torch
    from peft import get_peft_model

    from studbook.operators.artifacts import load_model, save_adapter
    from studbook.operators.tokenizer import load_tokenizer

    base = ctx.parents[0]
    model = load_model(base.path)
    torch.manual_seed(ctx.recipe.seed)  # LoRA's A matrices are drawn at random (B starts at 0)
    peft_model = get_peft_model(model, lora_config(ctx.params))
    save_adapter(peft_model, load_tokenizer(base.path), ctx.out_dir)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return {"adapter_parameters": trainable, "rank": ctx.params.rank,
            "base": {"name": base.name, "path": str(base.path), "sha256": base.sha256}}
