"""ties: trim, elect sign, disjoint merge (Yadav et al. 2023, "TIES-Merging",
https://arxiv.org/abs/2306.01708).

Each task vector keeps its `density` fraction of largest magnitudes (mergekit's `magnitude`:
at least one entry, exact ties at the cut broken as its argsort breaks them, see
`_task_vectors`), is multiplied by its weight, the sign with the larger total weighted mass
wins per entry (mergekit's `get_mask`, method "sum"), and agreeing entries are summed.
Where it follows mergekit rather than the paper: the sign is elected on the *weighted*
trimmed task vectors, `normalize` (on by default) divides by the summed weights of the
agreeing models (the paper takes their plain mean, as PEFT's `ties` does with its count),
and mergekit's `rescale` (off by default) scales each trimmed task vector back to its L1
norm. `int8_mask` is accepted and changes nothing.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import PER_MODEL, combine, shared_defaults


@register_merge("ties", base="required", min_models=1, per_model=PER_MODEL,
                shared=shared_defaults(normalize=True, rescale=False),
                reference="https://arxiv.org/abs/2306.01708")
def merge_ties(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="magnitude", elect_sign=True)
