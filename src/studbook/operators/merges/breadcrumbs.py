"""breadcrumbs and breadcrumbs_ties: Model Breadcrumbs (Davari & Belilovsky 2023, "Model
Breadcrumbs: Scaling Multi-Task Model Merging with Sparse Masks",
https://arxiv.org/abs/2312.06795).

Each task vector drops its `gamma` fraction of largest magnitudes (outliers) and then its
smallest, so that `density` of the entries remain; breadcrumbs sums the weighted task
vectors, breadcrumbs_ties first elects signs as TIES does. This is mergekit's
`magnitude_outliers` (see `_task_vectors`), which differs from the paper in that:

- the paper gives the two dropped fractions (largest and smallest) per layer; mergekit takes
  the kept fraction `density` and the dropped largest fraction `gamma` over each tensor:
  int(gamma x n) outliers go and int(density x n) entries stay (no max(1, .): density below
  1/n keeps nothing), and fewer outliers are dropped when both do not fit; exact ties at a cut as mergekit's ascending
  `torch.sort` orders them (a selection finds the cuts; the sort runs only on straddling ties);
- `gamma` and `density` are per model, the weights are rounded to the merge dtype, and
  mergekit's `normalize`, `rescale` (to the L1 norm) and `lambda` apply (all off/1 by
  default); `int8_mask` changes nothing.

Deterministic: no draws.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import PER_MODEL, combine, shared_defaults

_PER_MODEL = {**PER_MODEL, "gamma": 0.01}


@register_merge("breadcrumbs", base="required", min_models=1, per_model=_PER_MODEL,
                shared=shared_defaults(normalize=False, rescale=False),
                reference="https://arxiv.org/abs/2312.06795")
def merge_breadcrumbs(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="magnitude_outliers", elect_sign=False)


@register_merge("breadcrumbs_ties", base="required", min_models=1, per_model=_PER_MODEL,
                shared=shared_defaults(normalize=False, rescale=False),
                reference="https://arxiv.org/abs/2312.06795")
def merge_breadcrumbs_ties(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune="magnitude_outliers", elect_sign=True)
