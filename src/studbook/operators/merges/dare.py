"""dare_linear and dare_ties: drop and rescale (Yu et al. 2024, "Language Models are Super
Mario: Absorbing Abilities from Homologous Models as a Free Lunch",
https://arxiv.org/abs/2311.03099).

Each entry of a task vector is kept with probability `density`; dare_ties then elects signs
as TIES does, dare_linear sums. This follows mergekit's `bernoulli` sparsifier, not the
paper (nor PEFT's `random_pruning`, which is the paper's):

- the kept entries are rescaled so that the task vector keeps its L1 norm (`rescale`, on by
  default: mergekit's `rescaled_masked_tensor`, skipped when either norm is below 1e-7),
  where the paper divides by `density`;
- the mask is `torch.bernoulli` of a tensor filled with `density` in float32 (in bfloat16,
  with the rounded density, for bfloat16 merges), one draw per entry from torch's global
  generator, for each model with density < 1 in model order, tensor after tensor; the merge
  seeds it once, so a mergekit recipe with the same `random_seed` gives mergekit's tensors;
- weights are rounded to the merge dtype, `normalize` (off by default) divides by the
  (agreeing, for dare_ties) weights, `lambda` scales the result; `int8_mask` changes nothing.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import PER_MODEL, combine, shared_defaults


@register_merge("dare_linear", base="required", min_models=1, per_model=PER_MODEL,
                shared=shared_defaults(normalize=False, rescale=True), deterministic=False,
                reference="https://arxiv.org/abs/2311.03099")
def merge_dare_linear(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="random", elect_sign=False)


@register_merge("dare_ties", base="required", min_models=1, per_model=PER_MODEL,
                shared=shared_defaults(normalize=False, rescale=True), deterministic=False,
                reference="https://arxiv.org/abs/2311.03099")
def merge_dare_ties(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="random", elect_sign=True)
