"""scratch: a founder with freshly initialised weights from any HF causal-LM config."""

from __future__ import annotations

from pathlib import Path

from . import register


@register("scratch", min_parents=0, max_parents=0, base_model_relation=None,
          description="random initialisation from the recipe's model config (seeded)")
def breed_scratch(recipe, parents: list[Path], out_dir: Path) -> dict:
    from ..artifacts import build_model, save_model
    from ..tokenizer import build_tokenizer

    model = build_model(recipe.model, seed=recipe.seed)
    tokenizer = build_tokenizer(recipe.model.context_length)
    save_model(model, tokenizer, out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters())}
