"""nuslerp: spherical interpolation of two models by their relative weights (mergekit's NuSLERP).

Definition: mergekit's own method (Arcee AI, no paper; `merge_methods/nuslerp.py` of
mergekit 0.1.5 is the reference). It is Shoemake's slerp (SIGGRAPH 1985) between two models
`a` and `b` with t = w_b / (w_a + w_b) (0.5 when the weights sum to nearly 0), with two
changes from `slerp`:
- with a base_model the two inputs are the task vectors `a - base` and `b - base`, and
  the result is `base + slerp(...)`; without one, the models themselves;
- `nuslerp_flatten` (default true) treats the whole tensor as one vector; otherwise each
  row (the last axis) is its own vector, or with `nuslerp_row_wise` each column (the first
  axis, moved last).

Where it follows mergekit operation for operation, so the tensors are mergekit's bit for bit:
t and `1 - t` are Python doubles (not float32 as in `slerp`); all maths is in the inputs'
dtype (no upcast); a vector's norm is clamped to at least 1e-7; vectors with
1 - cos^2 <= 1e-16 interpolate linearly; sin(theta) divides the weighted sum (not each
coefficient). PEFT has no SLERP.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import aligned, each, spans, widest

EPS = 1e-8


CHUNK_ELEMENTS = 1 << 17  # entries per chunk of the elementwise passes (flattened vectors)


def _nuslerp_flat(t: float, v0, v1, eps: float, base=None):
    """mergekit's `nuslerp` with `flatten` (then `base +` it, with a base): the two norms
    and the cosine's sum are its calls on whole vectors, on the caller's threads; the
    elementwise steps (the unit vectors' product, the interpolation, the base added) run
    over chunks spread over threads (see `each`) with its operands in its order, into one
    output buffer, so each entry gets the same float with one full-size buffer instead of
    five."""
    import torch

    a, b = v0.reshape(-1), v1.reshape(-1)
    norm_a = torch.norm(a, dim=-1, keepdim=True).clamp(min=1e-7)  # _normalize's divisors
    norm_b = torch.norm(b, dim=-1, keepdim=True).clamp(min=1e-7)
    size = a.numel()
    out = torch.empty(size, dtype=torch.promote_types(a.dtype, b.dtype))
    chunks = spans(size, CHUNK_ELEMENTS)
    width = widest(chunks)

    def scratch():
        return torch.empty(width, dtype=out.dtype)

    def product(span, spare):  # v0_u * v1_u
        start, stop = span
        torch.div(a[start:stop], norm_a, out=out[start:stop]).mul_(
            torch.div(b[start:stop], norm_b, out=spare[:stop - start]))

    each(chunks, product, scratch)
    cos_theta = torch.sum(out, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))  # finite on the unselected branch
    sin_theta = torch.sin(theta)
    weight_a, weight_b = torch.sin((1 - t) * theta), torch.sin(t * theta)
    linear = bool(colinear.any())  # one vector: torch.where then picks the lerp everywhere

    def interpolate(span, spare):
        start, stop = span
        part, spare = out[start:stop], spare[:stop - start]
        if linear:  # (1 - t) * v0 + t * v1
            torch.mul(a[start:stop], 1 - t, out=part).add_(torch.mul(b[start:stop], t, out=spare))
        else:  # (sin((1-t) theta) * v0 + sin(t theta) * v1) / sin_theta
            torch.mul(weight_a, a[start:stop], out=part)
            part.add_(torch.mul(weight_b, b[start:stop], out=spare)).div_(sin_theta)
        if base is not None:
            torch.add(base[start:stop], part, out=part)  # base + nuslerp(...)

    each(chunks, interpolate, scratch)
    return out


def nuslerp(t: float, v0, v1, dim: int = -1, eps: float = EPS, flatten: bool = False):
    """mergekit's `nuslerp` kernel: v0 at t = 0; vectors along `dim` (or the whole tensor)."""
    import torch

    out_shape = v0.shape
    if flatten:
        return _nuslerp_flat(t, v0, v1, eps).view(out_shape)

    def normalize(x, eps: float = 1e-7):
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=eps)

    if dim != -1:
        v0 = v0.transpose(dim, -1)  # a strided view, as in mergekit: the norm walks it alike
        v1 = v1.transpose(dim, -1)

    v0_u = normalize(v0)
    v1_u = normalize(v1)
    cos_theta = torch.sum(v0_u * v1_u, dim=-1, keepdim=True).clamp(-1, 1)
    del v0_u, v1_u
    colinear = (1 - cos_theta.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))  # finite on the unselected branch
    sin_theta = torch.sin(theta)

    # mergekit's `(sin((1-t) theta) v0 + sin(t theta) v1) / sin_theta`, accumulated in place
    # (the same sums and quotients, fewer full-size temporaries)
    result = torch.sin((1 - t) * theta) * v0
    result.add_(torch.sin(t * theta) * v1)
    result.div_(sin_theta)
    if colinear.any():  # torch.where picks `result` itself wherever the vectors are not colinear
        result = torch.where(colinear, (1 - t) * v0 + t * v1, result)

    if dim != -1:
        result = result.transpose(dim, -1)
    return result.reshape(out_shape)


def interpolation_point(weights: list[float]) -> float:
    """t from the two weights, in Python doubles as mergekit computes it."""
    total = sum(weights)
    return 0.5 if abs(total) < 1e-6 else weights[1] / total


@register_merge("nuslerp", base="optional", min_models=2, max_models=2,
                per_model={"weight": None},
                shared={"nuslerp_row_wise": False, "nuslerp_flatten": True},
                reference="https://github.com/arcee-ai/mergekit/blob/main/mergekit/merge_methods/nuslerp.py")
def merge_nuslerp(base, tensors, per_model, shared):
    base, tensors, _dtype = aligned(base, tensors)
    t = interpolation_point([float(p["weight"]) for p in per_model])
    dim = 0 if bool(shared["nuslerp_row_wise"]) else -1
    flatten = bool(shared["nuslerp_flatten"])
    if base is None:
        v0, v1 = tensors
        tensors[0] = tensors[1] = None
        return nuslerp(t, v0, v1, dim=dim, flatten=flatten)
    v0 = tensors[0] - base  # task vectors: each model is freed once subtracted
    tensors[0] = None
    v1 = tensors[1] - base
    tensors[1] = None
    if flatten:  # base + nuslerp(...), the sum written over the kernel's own output
        return _nuslerp_flat(t, v0, v1, EPS, base.reshape(-1)).view(base.shape)
    return base + nuslerp(t, v0, v1, dim=dim, flatten=flatten)
