"""distill: a smaller student learns from the parent's logits (Hinton et al. 2015).

Loss per token: kl_weight * T^2 * KL(teacher_T || student_T) + (1 - kl_weight) * CE, with
T the temperature. The student is a member of the teacher's family that carries the
teacher's tokenizer and vocabulary (so their logits compare token for token): its sizes
are the recipe's `model.config` (given) or, when that is empty, the teacher's config with
half the layers (derived). The teacher runs on the same device as the student.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from studbook.operators.methods import register


class DistillParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float = Field(default=2.0, gt=0, description="softmax temperature T")
    kl_weight: float = Field(default=0.5, ge=0, le=1, description=(
        "share of the soft-target loss; the rest is cross-entropy on the data"))


def check_family(ctx, file: str) -> None:
    """The student is in the teacher's family and no wider in context than the teacher."""
    from studbook.core.errors import StudbookError

    teacher, spec = ctx.parents[0], ctx.recipe.model
    family = teacher.config.get("model_type")
    if spec.architecture != family:
        raise StudbookError(f"the student is a {spec.architecture}, its teacher '{teacher.name}' a "
                            f"{family}: a student is a smaller member of its teacher's family "
                            "(they share tokenizer and vocabulary)", file=file, key="model.architecture")


@register("distill", min_parents=1, max_parents=1, base_model_relation="finetune",
          relation="distillation", parameters=DistillParameters, parent_kinds=("model", "adapter"),
          teaches=True, uses_model_spec=True, check=check_family,
          description="distil the parent (teacher) into a smaller student of its family")
def breed_distill(ctx) -> dict:
    from studbook.operators.artifacts import build_model, save_model
    from studbook.operators.tokenizer import load_tokenizer

    teacher = ctx.parents[0]
    student = build_model(ctx.recipe.model, seed=ctx.recipe.seed, family=teacher.config)
    save_model(student, load_tokenizer(teacher.path), ctx.out_dir)
    return {"parameters": sum(p.numel() for p in student.parameters()),
            "layers": student.config.num_hidden_layers,
            "derived": not ctx.recipe.model.config,
            "teacher": {"name": teacher.name, "sha256": teacher.sha256,
                        "parameters": int(teacher.meta.get("total_parameters", teacher.meta["parameters"]))}}
