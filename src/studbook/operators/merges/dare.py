"""dare_linear and dare_ties: drop and rescale (Yu et al. 2024, "Language Models are Super Mario").

Each entry of a task vector is kept with probability `density` and the kept entries are
divided by `density` (PEFT's `random_pruning` with rescale), so the expected task vector
is unchanged. dare_ties then elects signs as TIES does. The draws come from torch's
global generator, seeded once per merge: a fixed seed gives the same tensors.
(mergekit rescales to the original L1 norm instead of 1/density; its DARE tensors
therefore differ from the paper's, and ours follow the paper.)
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import combine

_PER_MODEL = {"weight": None, "density": 1.0}


@register_merge("dare_linear", base="required", min_models=1, per_model=_PER_MODEL,
                shared={"normalize": False, "lambda": 1.0}, deterministic=False,
                reference="https://arxiv.org/abs/2311.03099")
def merge_dare_linear(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="random", elect_sign=False)


@register_merge("dare_ties", base="required", min_models=1, per_model=_PER_MODEL,
                shared={"normalize": False, "lambda": 1.0}, deterministic=False,
                reference="https://arxiv.org/abs/2311.03099")
def merge_dare_ties(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="random", elect_sign=True)
