"""multislerp: barycentric interpolation of any number of models on the hypersphere.

Definition: C. Goddard, "Multi-SLERP" (https://goddard.blog/posts/multislerp-wow-what-a-cool-idea),
the reference mergekit cites: project the inputs (or, with a base_model, their task vectors)
onto the unit sphere, take their weighted Euclidean mean as the tangent point, average the
inputs' projections onto that tangent space with the same weights, map the average back
onto the sphere with the exponential map, and rescale by the weighted mean of the norms.

Where it follows mergekit 0.1.5 (`merge_methods/multislerp.py`) operation for operation, so
the tensors are mergekit's bit for bit:
- one model besides the base: that model, unchanged (the base is ignored);
- the weights are a tensor of the inputs' dtype D (rounded to bfloat16 for bfloat16
  inputs), divided by their sum when `normalize_weights`; all maths is in D (no upcast);
- unit vectors divide by `norm + eps`; the tangent norm has eps added before the exp map;
- a weighted mean of norm < eps falls back to linear interpolation for two models and is
  an error for more (antipodal inputs whose weights cancel).
PEFT has no counterpart.
"""

from __future__ import annotations

from studbook.core.errors import StudbookError
from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import aligned


@register_merge("multislerp", base="optional", min_models=1, per_model={"weight": None},
                shared={"normalize_weights": True, "eps": 1e-8},
                reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea")
def merge_multislerp(base, tensors, per_model, shared):
    import torch

    base, tensors, dtype = aligned(base, tensors)
    eps = float(shared["eps"])
    count = len(tensors)
    if count == 1:
        return tensors[0]  # no interpolation needed

    shape = tensors[0].shape
    stacked = torch.empty((count, *shape), dtype=dtype)  # torch.stack, freeing each input
    for index in range(count):
        stacked[index].copy_(tensors[index])
        tensors[index] = None
    if base is not None:
        stacked -= base
    flat = stacked.view(count, -1)

    weights = torch.tensor([float(p["weight"]) for p in per_model], dtype=dtype)
    if bool(shared["normalize_weights"]):
        weights = weights / weights.sum()

    norms = torch.norm(flat, dim=-1, keepdim=True)  # project onto the unit sphere
    if count == 2:  # the inputs stay for the linear fallback below
        units = flat / (norms + eps)
    else:  # divided in place: the same quotients, one stack fewer
        units = flat.div_(norms + eps)
        stacked = flat = None

    mean = (units * weights.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if count == 2:  # linear interpolation
            result = (stacked[0] * weights[0] + stacked[1] * weights[1]).view(shape)
            return result + base if base is not None else result
        raise StudbookError("multislerp: the weighted mean of the inputs' directions is zero "
                            "(antipodal inputs whose weights cancel); use other weights")
    stacked = flat = None
    mean = mean / mean_norm

    # onto the tangent space at the mean (in place: each entry is the same difference and
    # product as mergekit's out-of-place `units - dots * mean`, `tangents * weights`)
    dots = (units * mean).sum(-1, keepdim=True)
    tangents = units.sub_(dots * mean)
    del units, dots
    tangent = tangents.mul_(weights.view(-1, 1)).sum(0)  # interpolate there
    del tangents

    tangent_norm = torch.norm(tangent) + eps  # back onto the sphere: the exponential map
    result = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)

    average_norm = (norms.squeeze(-1) * weights).sum()
    result = result * average_norm
    result = result.view(shape)
    if base is not None:
        result = result + base
    return result
