"""sce: select, calculate, erase (Wan et al. 2024, FuseChat, arXiv 2408.07990).

Select: with `select_topk` < 1, keep only the entries where the task vectors vary most
across the models (the top fraction of the per-entry variance). Calculate: each model's
weight is the mean square of its (selected) task vector, normalised to sum to 1 (the
paper's sum of squares; the same weights up to rounding). Erase: per
entry, drop the task vectors whose sign disagrees with the summed (unweighted) task vectors
(TIES's rule), then average the rest by those weights.

Follows mergekit 0.1.5 (`merge_methods/sce.py`) operation for operation rather than the
paper's prose: the top-k count is int(count_nonzero(variance) x select_topk) computed as a
float32 tensor product (not in Python double), ties among equal variances go the way
`torch.topk` orders them (the same call), the weights' sum is taken in the input dtype and
read back as a Python float (`.item()`), all-zero task vectors give equal weights 1/k, and
the erase denominator is clamped at 1e-6. There is no per-model weight. `int8_mask` only
changes the masks' storage type, as in mergekit.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge


def sce_mask(task_vectors, density: float, mask_dtype):
    """mergekit's `sce_mask`: 1 on the top `density` fraction of the nonzero variances."""
    import torch

    if density <= 0:
        return torch.zeros_like(task_vectors[0], dtype=mask_dtype)
    if density >= 1:
        return torch.ones_like(task_vectors[0], dtype=mask_dtype)
    var = torch.var(task_vectors, dim=0, unbiased=False)
    nonzero = torch.count_nonzero(var)
    k = int(nonzero * density)  # an int64 tensor times a float: a float32 product, truncated
    if k == 0:
        return torch.zeros_like(var, dtype=mask_dtype)
    _, indices = torch.topk(var.abs().view(-1), k=k, largest=True)
    mask = torch.zeros_like(var, dtype=mask_dtype)
    mask.view(-1)[indices] = 1
    return mask


def sce_weight(task_vectors):
    """mergekit's `sce_weight`: mean squares, normalised by their sum as a Python float."""
    import torch

    weights = task_vectors.square().reshape(task_vectors.shape[0], -1).mean(dim=1)
    weight_sum = torch.sum(weights).item()
    if abs(weight_sum) < 1e-6:
        return torch.ones_like(weights) / weights.shape[0]
    return weights / weight_sum


@register_merge("sce", base="required", min_models=1,
                shared={"int8_mask": False, "select_topk": 1.0},
                reference="https://arxiv.org/abs/2408.07990")
def merge_sce(base, tensors, per_model, shared):
    import torch

    if not tensors:
        return base
    mask_dtype = torch.int8 if shared["int8_mask"] else base.dtype
    # torch.stack([t - base ...]) filled in place: each input is freed once subtracted
    dtype = base.dtype
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    task_vectors = torch.empty((len(tensors), *base.shape), dtype=dtype)
    for index in range(len(tensors)):
        tensor, tensors[index] = tensors[index], None
        torch.sub(tensor, base, out=task_vectors[index])
        del tensor
    select_topk = shared["select_topk"]
    if select_topk < 1:
        mask = sce_mask(task_vectors, select_topk, mask_dtype)
        task_vectors.mul_(mask.unsqueeze(0))  # task_vectors * mask, same products
        del mask
    # the erase mask: mergekit's get_mask(method="sum") on the unweighted task vectors
    sign = task_vectors.sign().to(mask_dtype)
    majority_sign = (task_vectors.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    erase_mask = sign == majority_sign
    del sign, majority_sign
    tv_weights = sce_weight(task_vectors)
    while tv_weights.dim() < task_vectors.dim():
        tv_weights = tv_weights.unsqueeze(-1)
    erased_weights = tv_weights * erase_mask
    del erase_mask
    merged_tv = task_vectors.mul_(erased_weights).sum(dim=0)
    del task_vectors
    final_tv = merged_tv / torch.sum(erased_weights, dim=0).clamp(min=1e-6)
    return base + final_tv
