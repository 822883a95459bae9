"""distill: a smaller student (its own model config) learns from the parent's logits.

Loss per token: kl_weight * T^2 * KL(teacher_T || student_T) + (1 - kl_weight) * CE, with
T the temperature (Hinton et al. 2015). Teacher and student share the tokenizer: the
student gets the teacher's, and the vocabularies must agree (checked before compute).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from studbook.operators.methods import register


class DistillParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float = Field(default=2.0, gt=0, description="softmax temperature T")
    kl_weight: float = Field(default=0.5, ge=0, le=1, description=(
        "share of the soft-target loss; the rest is cross-entropy on the data"))


def check_tokenizers(ctx, file: str) -> None:
    from studbook.core.errors import StudbookError
    from studbook.operators.tokenizer import build_tokenizer, tokenizer_fingerprint

    teacher = ctx.parents[0]
    student = tokenizer_fingerprint(build_tokenizer(ctx.recipe.model.context_length))
    if teacher.meta["tokenizer_sha256"] != student:
        raise StudbookError(f"teacher '{teacher.name}' has tokenizer {teacher.meta['tokenizer_sha256'][:12]}…, "
                            f"the student's is {student[:12]}…: they must tokenize identically",
                            file=file, key="parents[0]")


@register("distill", min_parents=1, max_parents=1, base_model_relation="finetune",
          relation="distillation", parameters=DistillParameters, parent_kinds=("model", "adapter"),
          teaches=True, uses_model_spec=True, check=check_tokenizers,
          description="distil the parent (teacher) into a student built from the recipe's model")
def breed_distill(ctx) -> dict:
    from studbook.operators.artifacts import build_model, save_model
    from studbook.operators.tokenizer import load_tokenizer

    teacher = ctx.parents[0]
    student = build_model(ctx.recipe.model, seed=ctx.recipe.seed)
    save_model(student, load_tokenizer(teacher.path), ctx.out_dir)
    return {"parameters": sum(p.numel() for p in student.parameters()),
            "teacher": {"name": teacher.name, "sha256": teacher.sha256,
                        "parameters": int(teacher.meta.get("total_parameters", teacher.meta["parameters"]))},
            "temperature": ctx.params.temperature, "kl_weight": ctx.params.kl_weight}
