"""finetune: continue training all of one model parent's weights (a full fine-tune).

The child starts as a byte-for-byte copy of its parent's weights and tokenizer; the
training in the breed stage then updates every parameter. Compared with `lora`, the artifact is a whole
model (no base to pin) and every weight may move.
"""

from __future__ import annotations

import shutil

from studbook.operators.methods import register

@register("finetune", min_parents=1, max_parents=1, base_model_relation="finetune",
          relation="finetune", description="full fine-tune of the parent's weights")
def breed_finetune(ctx) -> dict:
    parent = ctx.parents[0]
    for item in sorted(parent.path.iterdir()):
        # the child writes its own studbook.json; README.md is the parent's card (record)
        if item.is_file() and item.name not in ("studbook.json", "README.md"):
            shutil.copy2(item, ctx.out_dir / item.name)
    return {"from": parent.name, "parent_sha256": parent.sha256}
