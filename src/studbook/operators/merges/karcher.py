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
from studbook.operators.merges._sphere import aligned, each, per_thread, spans, widest, working

CHUNK_ELEMENTS = 1 << 17  # entries per chunk of the elementwise passes


def karcher_mean(tensors: list, alphas: list[float], max_iter: int = 10, tol: float = 1e-5):
    """mergekit's `karcher_merge_tensors`; consumes `tensors` (entries set to None once
    turned into unit vectors), so at most one input and its unit vector are held twice.

    The whole-tensor reductions (norms, dot products) are mergekit's calls on whole
    tensors, on the caller's threads. The elementwise steps between them (the tangent's
    weighted sum over the inputs, the exponential map, the normalisations) run over
    chunks of CHUNK_ELEMENTS entries spread over threads (see `each`), each step written
    into its own buffer: every entry sees mergekit's operations, with the same operands
    in the same order and dtypes (0-dim tensors stay 0-dim, Python floats stay Python
    floats), so the same floats; a pass over the inputs costs one read of each instead
    of several full-size temporaries per input."""
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

    unit_dtype = units[0].dtype
    flats = [unit.view(-1) for unit in units]
    size = flats[0].numel()
    chunks = spans(size, CHUNK_ELEMENTS)
    width = widest(chunks)

    # each worker's two buffers, kept over the iterations
    scratch = per_thread(lambda: (torch.empty(width, dtype=unit_dtype), torch.empty(width, dtype=unit_dtype)))

    mean = torch.zeros_like(units[0])
    flat_mean = mean.view(-1)

    def start_mean(span, state):  # mean += alpha * unit, input by input
        start, stop = span
        part, product = flat_mean[start:stop], state[0][:stop - start]
        for alpha, flat in zip(weights, flats):
            part += torch.mul(flat[start:stop], alpha, out=product)

    each(chunks, start_mean, scratch)
    mean_norm = torch.linalg.vector_norm(mean.to(dtype))
    if mean_norm.item() < tol:
        mean = units[0].clone()
    else:
        mean.div_(mean_norm)  # (mean / mean_norm).to(mean.dtype)
    flat_mean = mean.view(-1)

    tangent = torch.empty_like(mean)
    flat_tangent = tangent.view(-1)
    for _ in range(max_iter):
        # per input: dot, theta and the coefficient alpha * theta / sin(theta), or skipped
        terms = []
        for alpha, flat in zip(weights, flats):
            dot = torch.clamp(torch.dot(flat_mean, flat), -1.0, 1.0)
            theta = torch.arccos(dot)
            if theta.item() < tol:
                continue
            terms.append((alpha * (theta / torch.sin(theta)), dot, flat))

        def tangent_part(span, state, terms=terms):  # tangent = 0; += coef * (unit - dot * mean)
            start, stop = span
            part = flat_tangent[start:stop]
            product, difference = state[0][:stop - start], state[1][:stop - start]
            if not terms:
                part.zero_()
            for index, (coefficient, dot, flat) in enumerate(terms):
                torch.mul(dot, flat_mean[start:stop], out=product)
                torch.sub(flat[start:stop], product, out=difference)
                torch.mul(coefficient, difference, out=product)
                if index:
                    part += product
                else:  # 0 + x, as the zeros plus the first term: x, but -0 becomes +0
                    torch.add(product, 0.0, out=part)

        each(chunks, tangent_part, scratch)
        tangent_norm = torch.linalg.vector_norm(tangent.to(dtype))
        if tangent_norm.item() < tol:
            break
        cos, sin = torch.cos(tangent_norm), torch.sin(tangent_norm)

        def step(span, state, cos=cos, sin=sin, tangent_norm=tangent_norm):
            # mean = cos(|t|) * mean + sin(|t|) * (tangent / |t|), written over the old mean
            start, stop = span
            product, quotient = state[0][:stop - start], state[1][:stop - start]
            torch.mul(cos, flat_mean[start:stop], out=product)
            torch.div(flat_tangent[start:stop], tangent_norm, out=quotient)
            torch.mul(sin, quotient, out=quotient)
            torch.add(product, quotient, out=flat_mean[start:stop])

        each(chunks, step, scratch)
        unit_norm = torch.linalg.vector_norm(mean.to(dtype))
        if unit_norm.item() > tol:
            mean.div_(unit_norm)  # (mean / unit_norm).to(mean.dtype)

    units = flats = tangent = None  # the unit vectors are freed here
    scale = sum(alpha * norm for alpha, norm in zip(alphas, norms))  # all inputs, unnormalised
    return torch.mul(scale, mean, out=mean)  # scale * mean, over the mean we own


@register_merge("karcher", base="ignored", min_models=1, per_model={},
                shared={"max_iter": 10, "tol": 1e-5},
                reference="https://arxiv.org/abs/2603.04972")
def merge_karcher(base, tensors, per_model, shared):
    _base, tensors, _dtype = aligned(None, tensors)
    if len(tensors) == 1:
        return tensors[0]
    alphas = [1.0 / len(tensors)] * len(tensors)
    return karcher_mean(tensors, alphas, max_iter=int(shared["max_iter"]), tol=float(shared["tol"]))
