"""The shared core of the task-vector methods (task arithmetic, TIES, DARE).

Not a method itself (its name starts with `_`, but the registry imports every module,
so it registers nothing). Random pruning and sign election are PEFT's functions; the
weighting and normalisation follow mergekit's generalised task arithmetic so recipes
written for mergekit give the same tensors.

Magnitude pruning picks its entries the way mergekit does (a descending argsort), not
with PEFT's `magnitude_based_pruning` (a top-k): a task vector `child - base` lies on the
base's floating-point grid, so many magnitudes tie exactly, and the two orderings break
ties at the cut differently. On 134 M-parameter checkpoints PEFT's rule gave TIES tensors
that differ from mergekit's (bench/merge_vs_mergekit.py); this one gives mergekit's bit
for bit.
"""

from __future__ import annotations


def magnitude_prune(delta, density: float):
    """Keep the int(density x n) largest magnitudes (ties resolved as mergekit resolves them)."""
    import torch

    keep = int(density * delta.numel())
    order = torch.argsort(delta.abs().reshape(-1), descending=True)[:keep]
    mask = torch.zeros(delta.numel(), dtype=delta.dtype)
    mask[order] = 1
    return delta * mask.view_as(delta)


def combine(base, tensors, per_model, shared, prune: str | None, elect_sign: bool):
    import torch
    from peft.utils.merge_utils import calculate_majority_sign_mask, random_pruning

    if not tensors:
        return base
    deltas = base.new_empty((len(tensors), *base.shape))
    for index, (tensor, params) in enumerate(zip(tensors, per_model)):
        delta = tensor - base
        density = params.get("density", 1.0)
        if prune == "magnitude" and density < 1:
            if int(density * delta.numel()) >= 1:
                delta = magnitude_prune(delta, density)
            else:  # mergekit keeps at least one entry of a non-empty tensor
                delta = delta * (delta.abs() == delta.abs().max())
        elif prune == "random" and density < 1:
            delta = random_pruning(delta, density, rescale=True)
        deltas[index] = delta
    weights = torch.tensor([p["weight"] for p in per_model], dtype=deltas.dtype)
    weights = weights.view((-1,) + (1,) * base.dim())
    deltas.mul_(weights)
    if elect_sign:
        mask = calculate_majority_sign_mask(deltas, method="total").to(deltas.dtype)
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if shared["normalize"]:
        mixed /= divisor
    if shared["lambda"] != 1:
        mixed *= shared["lambda"]
    return (base + mixed).to(base.dtype)
