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
from studbook.operators.merges._sphere import aligned, each, one_thread, per_thread, spans, widest

CHUNK_ELEMENTS = 1 << 17  # columns per chunk (per input) of the elementwise passes


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
    flats = [tensor.reshape(-1) for tensor in tensors]
    flat_base = base.reshape(-1) if base is not None else None
    size = flats[0].numel()
    chunks = spans(size, CHUNK_ELEMENTS)
    width = widest(chunks)
    scratch = per_thread(lambda: torch.empty((count, width), dtype=dtype))

    def stacked(start: int, stop: int, buffer):
        """Columns start:stop of mergekit's stack (minus the base), into `buffer`."""
        part = buffer[:, :stop - start] if stop - start == width else torch.empty((count, stop - start), dtype=dtype)
        for index, flat in enumerate(flats):
            if flat_base is None:
                part[index].copy_(flat[start:stop])
            else:
                torch.sub(flat[start:stop], flat_base[start:stop], out=part[index])  # tensors -= base
        return part

    weights = torch.tensor([float(p["weight"]) for p in per_model], dtype=dtype)
    if bool(shared["normalize_weights"]):
        weights = weights / weights.sum()
    column = weights.view(-1, 1)

    # per-row reductions of mergekit's (k, n) tensors, row by row: torch reduces each row of a
    # (k >= 2, n) tensor whole on one thread, so a row alone on one thread is the same float
    row = torch.empty(size, dtype=dtype)  # one row's values, reduced whole
    norms = [None] * count

    def norm(index, _state):  # torch.norm(tensors_flat, dim=-1, keepdim=True), this row's
        norms[index] = torch.norm(flats[index].view(1, -1), dim=-1, keepdim=True)

    if flat_base is None:  # the rows are the inputs: reduced side by side
        each(range(count), norm, minimum=2)
    else:
        for index, flat in enumerate(flats):
            def difference(span, _state, flat=flat):
                torch.sub(flat[span[0]:span[1]], flat_base[span[0]:span[1]], out=row[span[0]:span[1]])

            each(chunks, difference)
            with one_thread():
                norms[index] = torch.norm(row.view(1, -1), dim=-1, keepdim=True)
    norms = torch.cat(norms)  # project onto the unit sphere: tensors_flat / (norms + eps)
    divisors = norms + eps

    mean = torch.empty(size, dtype=dtype)

    def weighted_mean(span, buffer):  # (units * weights).sum(0)
        units = stacked(*span, buffer).div_(divisors)
        torch.sum(units.mul_(column), dim=0, out=mean[span[0]:span[1]])

    each(chunks, weighted_mean, scratch)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if count == 2:  # linear interpolation
            result = torch.empty(size, dtype=dtype)

            def lerp(span, buffer):
                part = stacked(*span, buffer)
                merged = part[0] * weights[0] + part[1] * weights[1]
                if flat_base is not None:
                    merged = merged + flat_base[span[0]:span[1]]
                result[span[0]:span[1]] = merged

            each(chunks, lerp, scratch)
            return result.view(shape)
        raise StudbookError("multislerp: the weighted mean of the inputs' directions is zero "
                            "(antipodal inputs whose weights cancel); use other weights")
    mean.div_(mean_norm)  # mean / mean_norm

    # onto the tangent space at the mean: dots = (units * mean).sum(-1, keepdim=True), row by row
    dots = []
    for index, flat in enumerate(flats):
        def product(span, _state, index=index, flat=flat):
            start, stop = span
            part = row[start:stop]
            if flat_base is None:
                torch.div(flat[start:stop], divisors[index], out=part)
            else:
                torch.sub(flat[start:stop], flat_base[start:stop], out=part).div_(divisors[index])
            part.mul_(mean[start:stop])

        each(chunks, product)
        with one_thread():
            dots.append(row.view(1, -1).sum(-1, keepdim=True))
    dots = torch.cat(dots)
    row = None  # freed

    # tangents = units - dots * mean; tangent = (tangents * weights).sum(0): interpolate there
    tangent = torch.empty(size, dtype=dtype)

    def tangent_part(span, buffer):
        start, stop = span
        units = stacked(start, stop, buffer).div_(divisors)
        units.sub_(dots * mean[start:stop])
        torch.sum(units.mul_(column), dim=0, out=tangent[start:stop])

    each(chunks, tangent_part, scratch)

    tangent_norm = torch.norm(tangent) + eps  # back onto the sphere: the exponential map
    cos = torch.cos(tangent_norm)
    factor = torch.sin(tangent_norm) / tangent_norm
    average_norm = (norms.squeeze(-1) * weights).sum()

    def result_part(span, _state):  # (mean * cos + tangent * factor) * average_norm (+ base)
        start, stop = span
        part = mean[start:stop]
        part.mul_(cos).add_(tangent[start:stop].mul_(factor)).mul_(average_norm)
        if flat_base is not None:
            part.add_(flat_base[start:stop])

    each(chunks, result_part)
    tensors[:] = [None] * count
    return mean.view(shape)
