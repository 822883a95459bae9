"""linear: a weighted average of the models (Wortsman et al. 2022, model soups).

mergekit's definition: sum_i w_i * theta_i, divided by sum_i w_i when `normalize`.
Accumulated in float32 in input order, like mergekit, so the tensors agree bit for bit.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge


@register_merge("linear", needs_base=False, min_models=1, per_model={"weight": None},
                shared={"normalize": True}, reference="https://arxiv.org/abs/2203.05482")
def merge_linear(base, tensors, per_model, shared):
    import torch

    first = tensors[0]
    work = torch.float64 if first.dtype == torch.float64 else torch.float32
    result = torch.zeros_like(first, dtype=work)
    total = 0.0
    for tensor, params in zip(tensors, per_model):
        result.add_(tensor.to(work), alpha=params["weight"])
        total += params["weight"]
    if shared["normalize"]:
        result.div_(total)
    return result.to(first.dtype)
