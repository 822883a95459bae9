"""scratch: a founder with freshly initialised weights from any HF causal-LM config."""

from __future__ import annotations

from studbook.operators.methods import register


@register("scratch", min_parents=0, max_parents=0, base_model_relation=None, relation="founder", uses_model_spec=True,
          description="random initialisation from the recipe's model config (seeded)")
def breed_scratch(ctx) -> dict:
    from studbook.operators.artifacts import build_model, save_model
    from studbook.operators.tokenizer import build_tokenizer

    recipe = ctx.recipe
    model = build_model(recipe.model, seed=recipe.seed)
    tokenizer = build_tokenizer(recipe.model.context_length)
    save_model(model, tokenizer, ctx.out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters())}
