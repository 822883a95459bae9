"""nearswap: take the other model's value where it is near the base's (alchemonaut,
https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001; no paper).

Per entry, w = clamp(t / |base - other|, 0, 1) and the result is w * other + (1 - w) * base:
entries closer than `t` are swapped in whole, farther ones interpolated towards the base in
proportion to t over their distance.

Follows mergekit 0.1.5 (`merge_methods/nearswap.py`), whose formula is the model card's:
the distance is clamped at 1e-6 before dividing, `t` is a Python float (per-tensor filters
allowed) and all maths is in the input dtype. Exactly one model besides the base.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import each, spans, widest

CHUNK_ELEMENTS = 1 << 17  # entries per chunk


@register_merge("nearswap", base="required", min_models=1, max_models=1, shared={"t": None},
                reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001")
def merge_nearswap(base, tensors, per_model, shared):
    """mergekit's expression chunk by chunk, spread over threads (see `each`), in each
    thread's two buffers: every step is elementwise, each written in place with the
    operands of mergekit's expression in its order (`t / x` is torch's
    `x.reciprocal() * t`), so each entry gets the same float."""
    import torch

    other, tensors[0] = tensors[0], None
    t = shared["t"]
    dtype = torch.promote_types(base.dtype, other.dtype)
    result = torch.empty(base.shape, dtype=dtype)
    flat_base, flat_other, flat_result = base.reshape(-1), other.reshape(-1), result.view(-1)
    chunks = spans(flat_base.numel(), CHUNK_ELEMENTS)
    width = widest(chunks)

    def scratch():
        return torch.empty(width, dtype=dtype), torch.empty(width, dtype=dtype)

    def work(span, state):
        start, stop = span
        a, b = flat_base[start:stop], flat_other[start:stop]
        weight, product = state[0][:stop - start], state[1][:stop - start]
        torch.sub(a, b, out=weight).abs_()  # absdiff = torch.abs(a - b)
        # weight = (t / absdiff.clamp(min=1e-6)).clamp(min=0, max=1)
        weight.clamp_(min=1e-6).reciprocal_().mul_(t).clamp_(min=0, max=1)
        torch.mul(weight, b, out=product)  # weight * b
        # (1 - weight) * a: torch.rsub, as `1 - weight` calls it (not -w + 1: a NaN's sign)
        remainder = torch.rsub(weight, 1).mul_(a)
        torch.add(product, remainder, out=flat_result[start:stop])

    each(chunks, work, scratch)
    return result
