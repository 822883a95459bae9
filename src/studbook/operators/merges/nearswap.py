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


@register_merge("nearswap", base="required", min_models=1, max_models=1, shared={"t": None},
                reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001")
def merge_nearswap(base, tensors, per_model, shared):
    import torch

    other, tensors[0] = tensors[0], None
    absdiff = torch.abs(base - other)
    weight = (shared["t"] / absdiff.clamp(min=1e-6)).clamp(min=0, max=1)
    del absdiff
    return weight * other + (1 - weight) * base
