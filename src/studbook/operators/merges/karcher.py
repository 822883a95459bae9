"""karcher: the weighted Karcher (Riemannian, Frechet) mean of the models on the unit sphere.

Definition: the point of the sphere minimising the weighted sum of squared geodesic
distances to the inputs' directions (H. Karcher, "Riemannian center of mass and mollifier
smoothing", Comm. Pure Appl. Math. 30, 1977), found by the fixed-point iteration
mean <- exp_mean(sum_i a_i log_mean(u_i)); mergekit cites https://arxiv.org/abs/2603.04972
for its use in model merging. The mean direction is scaled by the weighted mean of the
inputs' norms.

Where it follows mergekit 0.1.5 (`merge_methods/karcher.py`) operation for operation, so the
tensors are mergekit's bit for bit:
- every input is averaged with the same weight 1/N, a base_model among them (mergekit
  appends an unlisted base and averages it in); no per-model weights;
- norms in float32 (float64 for float64 inputs), unit vectors and the iteration in the
  inputs' dtype D; branch points are Python comparisons of `.item()` values against `tol`:
  inputs of norm <= tol are left out of the direction (but not of the scale), all of them
  so gives zeros; a start mean of norm < tol becomes the first valid direction; an input
  within angle tol of the mean adds nothing; a tangent of norm < tol stops the iteration
  (at most `max_iter` steps);
- the result is `scale * mean` with `scale` a 0-dim float32 tensor: it stays in D.
PEFT has no counterpart.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import aligned, working


def karcher_mean(tensors: list, alphas: list[float], max_iter: int = 10, tol: float = 1e-5):
    """mergekit's `karcher_merge_tensors`; consumes `tensors` (entries set to None once
    turned into unit vectors), so at most one input and its unit vector are held twice."""
    import torch

    if len(tensors) == 1:
        return tensors[0]

    dtype = working(tensors[0].dtype)
    # norms stay tensors wherever they affect the result; `.item()` only picks branches
    norms = [torch.linalg.vector_norm(tensor.to(dtype)) for tensor in tensors]
    valid = [index for index, norm in enumerate(norms) if norm.item() > tol]
    if not valid:
        return sum(tensor * 0 for tensor in tensors)

    units = []
    for index, norm in enumerate(norms):
        tensor, tensors[index] = tensors[index], None
        if index in valid:  # the others' unit vectors are never used: not computed
            units.append(torch.zeros_like(tensor) if norm.item() == 0.0
                         else (tensor / norm).to(tensor.dtype))
        del tensor

    valid_alphas = [alphas[index] for index in valid]
    alpha_sum = sum(valid_alphas)
    weights = [alpha / alpha_sum for alpha in valid_alphas]

    mean = torch.zeros_like(units[0])
    for alpha, unit in zip(weights, units):
        mean += alpha * unit
    mean_norm = torch.linalg.vector_norm(mean.to(dtype))
    mean = units[0].clone() if mean_norm.item() < tol else (mean / mean_norm).to(mean.dtype)

    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for alpha, unit in zip(weights, units):
            dot = torch.clamp(torch.dot(mean.flatten(), unit.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            tangent += alpha * (theta / torch.sin(theta)) * (unit - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent.to(dtype))
        if tangent_norm.item() < tol:
            break
        mean = (torch.cos(tangent_norm) * mean
                + torch.sin(tangent_norm) * (tangent / tangent_norm)).to(mean.dtype)
        del tangent
        unit_norm = torch.linalg.vector_norm(mean.to(dtype))
        if unit_norm.item() > tol:
            mean = (mean / unit_norm).to(mean.dtype)

    del units
    scale = sum(alpha * norm for alpha, norm in zip(alphas, norms))  # all inputs, unnormalised
    return scale * mean


@register_merge("karcher", base="ignored", min_models=1, per_model={},
                shared={"max_iter": 10, "tol": 1e-5},
                reference="https://arxiv.org/abs/2603.04972")
def merge_karcher(base, tensors, per_model, shared):
    _base, tensors, _dtype = aligned(None, tensors)
    if len(tensors) == 1:
        return tensors[0]
    alphas = [1.0 / len(tensors)] * len(tensors)
    return karcher_mean(tensors, alphas, max_iter=int(shared["max_iter"]), tol=float(shared["tol"]))
