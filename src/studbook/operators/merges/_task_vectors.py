"""The shared core of the task-vector methods (task arithmetic, TIES, DARE).

Not a method itself (its name starts with `_`, but the registry imports every module,
so it registers nothing). Random pruning is PEFT's function; magnitude pruning, sign
election, weighting and normalisation follow mergekit's generalised task arithmetic
operation for operation, so recipes written for mergekit give its tensors bit for bit.

Three things differ from a literal transcription, all for the cost of large tensors:

- Magnitude pruning keeps what mergekit's descending argsort keeps. A task vector
  `child - base` lies on the base's floating-point grid, so magnitudes often tie exactly,
  and which tied entries at the cut survive is decided by argsort's own (unstable) order:
  PEFT's top-k breaks those ties differently (on 134 M-parameter checkpoints it gave
  other TIES tensors, bench/merge_vs_mergekit.py). A selection (`kthvalue`, linear time)
  finds the cut; only when ties straddle it does the argsort run, so the result is always
  argsort's and the sort is rare.
- The method consumes its `tensors` list (entries become None) so each input is freed
  once its task vector exists, and pruning works in place on that task vector.
- Sign election and the weighted sum run over column chunks of the stacked task vectors,
  so their temporaries (signs, masks, products) are a few MB instead of several copies of
  the largest tensor. Every output element sees the same operations in the same order.
  The sign rule is written out (three lines) rather than taken from PEFT's
  `calculate_majority_sign_mask`: importing peft costs ~160 MB of resident memory, more
  than the merge's own working set allows; peft is imported only for DARE.
"""

from __future__ import annotations

CHUNK_ELEMENTS = 1 << 20  # columns per chunk in the sign election and sum


def magnitude_prune(delta, density: float, inplace: bool = False):
    """Keep the max(1, int(density x n)) largest magnitudes, as mergekit's `magnitude` does."""
    import torch

    count = delta.numel()
    if density >= 1:
        return delta
    if density <= 0 or count == 0:
        return torch.zeros_like(delta)
    keep = max(1, int(density * count))
    magnitudes = delta.abs().reshape(-1)
    if magnitudes.dtype != torch.float32:
        magnitudes = magnitudes.float()  # mergekit sorts float32 magnitudes on the CPU
    cut = torch.kthvalue(magnitudes, count - keep + 1).values  # the keep-th largest
    mask = magnitudes >= cut
    if int(mask.sum()) != keep:  # ties straddle the cut: argsort's order decides which stay
        order = torch.argsort(magnitudes, descending=True)[:keep]
        mask = torch.zeros(count, dtype=torch.bool)
        mask[order] = True
    del magnitudes
    mask = mask.view_as(delta)  # x*1 and x*0, as mergekit's float mask gives
    return delta.mul_(mask) if inplace else delta * mask


def combine(base, tensors, per_model, shared, prune: str | None, elect_sign: bool):
    import torch

    if not tensors:
        return base
    deltas = []
    for index, params in enumerate(per_model):
        # consume the caller's list: each input is freed as soon as its task vector exists
        tensor, tensors[index] = tensors[index], None
        delta = tensor - base
        del tensor
        density = params.get("density", 1.0)
        if prune == "magnitude":
            delta = magnitude_prune(delta, density, inplace=True)
        elif prune == "random" and density < 1:
            from peft.utils.merge_utils import random_pruning  # imported only where used

            delta = random_pruning(delta, density, rescale=True)
        deltas.append(delta.reshape(-1))
    dtype = deltas[0].dtype
    weights = torch.tensor([p["weight"] for p in per_model], dtype=dtype).unsqueeze(-1)
    merged = torch.empty_like(base)
    flat_merged, flat_base = merged.view(-1), base.reshape(-1)
    for start in range(0, flat_base.numel(), CHUNK_ELEMENTS):
        stop = start + CHUNK_ELEMENTS
        chunk = torch.stack([delta[start:stop] for delta in deltas])
        chunk.mul_(weights)
        if elect_sign:  # mergekit's get_mask, method "sum" (TIES): the heavier sign wins
            majority = (chunk.sum(dim=0) >= 0).to(dtype) * 2 - 1
            agree = chunk.sign() == majority
            mixed = (chunk * agree).sum(dim=0)
            divisor = (weights * agree).sum(dim=0)
            divisor[divisor == 0] = 1
        else:
            mixed = chunk.sum(dim=0)
            divisor = weights.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        if shared["normalize"]:
            mixed /= divisor
        if shared["lambda"] != 1:
            mixed *= shared["lambda"]
        flat_merged[start:stop] = (flat_base[start:stop] + mixed).to(base.dtype)
    return merged
