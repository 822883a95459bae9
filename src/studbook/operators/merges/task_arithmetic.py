"""task_arithmetic: base + lambda * sum_i w_i * (theta_i - base) (Ilharco et al. 2023,
"Editing Models with Task Arithmetic", https://arxiv.org/abs/2212.04089).

mergekit's generalised task arithmetic without sparsifier or sign election (see
`_task_vectors`): the weights are rounded to the merge dtype before they multiply the task
vectors, and with `normalize` (mergekit's option, off by default here; not in the paper)
the sum is divided by sum_i w_i. Like mergekit it accepts, and ignores, `density`,
`rescale` and `int8_mask` (the parameters of the whole family). The weighted sum is also
PEFT's `task_arithmetic`.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._task_vectors import PER_MODEL, combine, shared_defaults


@register_merge("task_arithmetic", base="required", min_models=1, per_model=PER_MODEL,
                shared=shared_defaults(normalize=False, rescale=False),
                reference="https://arxiv.org/abs/2212.04089")
def merge_task_arithmetic(base, tensors, per_model, shared):
    return combine(base, tensors, per_model, shared, prune=None, elect_sign=False)
