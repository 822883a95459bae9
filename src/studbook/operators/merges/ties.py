"""ties: trim, elect sign, disjoint merge (Yadav et al. 2023, TIES-Merging).

Each task vector keeps its `density` fraction of largest magnitudes (ties at the cut
broken as mergekit breaks them, see `_task_vectors`), the sign with the larger total
weighted mass wins per entry (mergekit's `get_mask`, method "sum"; PEFT's
`calculate_majority_sign_mask`, method "total", is the same rule), and agreeing entries
are summed.
`normalize` (on by default, as in mergekit) divides by the weights of the agreeing models.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import combine


@register_merge("ties", base="required", min_models=1,
                per_model={"weight": None, "density": 1.0},
                shared={"normalize": True, "lambda": 1.0},
                reference="https://arxiv.org/abs/2306.01708")
def merge_ties(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="magnitude", elect_sign=True)
