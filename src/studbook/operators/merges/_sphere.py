"""Shared helpers of the spherical merges (slerp, nuslerp, multislerp, karcher); registers nothing.

mergekit 0.1.5 hands a merge kernel its inputs in one dtype D, the promotion of the loaded
tensors' dtypes (`merge_methods/dtype.py`: `promoted_dtype`, `align_dtype`); `aligned` does
the same here when the inputs of a tensor differ in dtype, so each kernel sees what
mergekit's sees.
"""

from __future__ import annotations


def promoted(tensors) -> object:
    """D: the promotion of the dtypes of `tensors` (None entries skipped), in input order."""
    import torch

    dtype = None
    for tensor in tensors:
        if tensor is not None:
            dtype = tensor.dtype if dtype is None else torch.promote_types(dtype, tensor.dtype)
    return dtype


def aligned(base, tensors: list) -> tuple:
    """(base, tensors, D) with every input in D; `tensors` is changed in place (no copy when
    the dtypes already agree)."""
    dtype = promoted([base, *tensors])
    if base is not None and base.dtype != dtype:
        base = base.to(dtype)
    for index, tensor in enumerate(tensors):
        if tensor is not None and tensor.dtype != dtype:
            tensors[index] = tensor.to(dtype)
    return base, tensors, dtype


def working(dtype):
    """mergekit's upcast for norms and interpolation coefficients: float64 inputs stay
    float64, every other floating dtype is computed in float32."""
    import torch

    return torch.float64 if dtype == torch.float64 else torch.float32
