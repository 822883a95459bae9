"""della and della_linear: DELLA-Merging's MagPrune (Deep et al. 2024, "DELLA-Merging:
Reducing Interference in Model Merging through Magnitude-Based Sampling",
https://arxiv.org/abs/2406.11617).

Each entry of a task vector is kept with a probability that grows linearly with its
magnitude rank within its row, from `density - epsilon` (smallest) to `density + epsilon`
(largest); della then elects signs and divides by the agreeing weights (normalize on),
della_linear sums. This is mergekit's `della_magprune` (see `_task_vectors`), which differs
from the paper in that:

- the kept entries are rescaled to the task vector's original L1 norm (`rescale`, on by
  default), where the paper divides each kept entry by its own keep probability;
- ranks are per row (dim 1; a vector is one row), cast to the working dtype (float32, or
  bfloat16 for bfloat16 merges, which loses rank resolution above 256 columns) before they
  are normalised, and the mask is one `torch.bernoulli` of the probabilities from torch's
  global generator, for each model with density < 1 in model order, tensor after tensor:
  under the same `random_seed` a mergekit recipe gives mergekit's tensors;
- `density ± epsilon` must stay inside (0, 1): otherwise the merge stops with a ValueError
  that says so (mergekit raises too), e.g. density 0.9 with the default epsilon 0.15;
- weights are rounded to the merge dtype, `lambda` scales the result, `int8_mask` changes
  nothing.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import PER_MODEL, combine, shared_defaults

_PER_MODEL = {**PER_MODEL, "epsilon": 0.15}


@register_merge("della", base="required", min_models=1, per_model=_PER_MODEL,
                shared=shared_defaults(normalize=True, rescale=True), deterministic=False,
                reference="https://arxiv.org/abs/2406.11617")
def merge_della(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="della_magprune", elect_sign=True)


@register_merge("della_linear", base="required", min_models=1, per_model=_PER_MODEL,
                shared=shared_defaults(normalize=False, rescale=True), deterministic=False,
                reference="https://arxiv.org/abs/2406.11617")
def merge_della_linear(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="della_magprune", elect_sign=False)
