"""ram and ramplus_tl: Reinforced Agent Merging (mergekit's reference: arXiv 2601.13572,
https://arxiv.org/abs/2601.13572).

An entry of a task vector counts when its magnitude exceeds `epsilon`. Entries that only
one model changes are taken whole; entries several models change are averaged over those
models (not over all of them, which would dilute unique updates). ramplus_tl ("tensor
local") also scales each model's unique entries by 1 + r x clamp(shared / unique, 0, alpha),
its counts of overlapping and unique entries in this tensor.

Follows mergekit 0.1.5 (`merge_methods/ram.py`) operation for operation, including where
it departs from plain arithmetic: counts are int64, the unique count is clamped at
`epsilon` (an int64 tensor clamped by a float becomes float32), so ramplus_tl's factors
are float32 and bfloat16/float16 inputs give a float32 result, written as such
(`result_dtype`); ram stays in the input dtype. No per-model weights.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge

_REFERENCE = "https://arxiv.org/abs/2601.13572"


def _promote_float32(dtype):
    import torch

    return torch.promote_types(dtype, torch.float32)


def _prepare(base, tensors, epsilon: float):
    """mergekit's `_prepare_ram_vectors`; consumes `tensors` (each freed once subtracted)."""
    import torch

    dtype = base.dtype
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    count = len(tensors)
    task_vectors = torch.empty((count, *base.shape), dtype=dtype)  # torch.stack, filled in place
    for index in range(count):
        tensor, tensors[index] = tensors[index], None
        torch.sub(tensor, base, out=task_vectors[index])
        del tensor
    tv_flat = task_vectors.view(count, -1)
    nonzero_mask = tv_flat.abs() > epsilon
    contrib_counts = nonzero_mask.sum(dim=0, keepdim=True)
    overlap_mask = contrib_counts > 1
    unique_mask = contrib_counts == 1
    return tv_flat, nonzero_mask, contrib_counts, overlap_mask, unique_mask


@register_merge("ram", base="required", min_models=1, shared={"epsilon": 1e-5},
                reference=_REFERENCE)
def merge_ram(base, tensors, per_model, shared):
    if not tensors:
        return base
    tv_flat, nonzero_mask, contrib_counts, overlap_mask, unique_mask = _prepare(
        base, tensors, shared["epsilon"])
    tv_flat_z = tv_flat * nonzero_mask
    del tv_flat, nonzero_mask
    merged_tv_flat = ((tv_flat_z * unique_mask)
                      + (tv_flat_z * overlap_mask / contrib_counts.clamp(min=1))).sum(dim=0, keepdim=True)
    del tv_flat_z
    return base + merged_tv_flat.reshape_as(base)


@register_merge("ramplus_tl", base="required", min_models=1,
                shared={"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}, reference=_REFERENCE,
                result_dtype=_promote_float32)
def merge_ramplus_tl(base, tensors, per_model, shared):
    if not tensors:
        return base
    epsilon = shared["epsilon"]
    tv_flat, nonzero_mask, contrib_counts, overlap_mask, unique_mask = _prepare(base, tensors, epsilon)
    shared_counts = (nonzero_mask & overlap_mask).sum(dim=1)
    unique_counts = (nonzero_mask & unique_mask).sum(dim=1)
    rho = shared_counts / unique_counts.clamp(min=epsilon)
    lambda_ = 1 + shared["r"] * rho.clamp(min=0, max=shared["alpha"])
    tv_flat_z = tv_flat * nonzero_mask
    del tv_flat, nonzero_mask
    merged_tv_flat = ((tv_flat_z * unique_mask * lambda_.unsqueeze(-1))
                      + (tv_flat_z * overlap_mask / contrib_counts.clamp(min=1))).sum(dim=0, keepdim=True)
    del tv_flat_z
    return base + merged_tv_flat.reshape_as(base)
