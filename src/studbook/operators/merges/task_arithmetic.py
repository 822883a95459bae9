"""task_arithmetic: base + lambda * sum_i w_i * (theta_i - base) (Ilharco et al. 2023).

The weighted sum of task vectors is PEFT's `task_arithmetic`; with `normalize` the sum
is divided by sum_i w_i (mergekit's option, off by default for this method).
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import combine


@register_merge("task_arithmetic", base="required", min_models=1, per_model={"weight": None},
                shared={"normalize": False, "lambda": 1.0},
                reference="https://arxiv.org/abs/2212.04089")
def merge_task_arithmetic(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune=None, elect_sign=False)
