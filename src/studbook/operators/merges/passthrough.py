"""passthrough: one model's tensor, unchanged or scaled (mergekit's own method; no paper).

With slices it assembles frankenmerges (layers of several models stacked); in `models:`
mode it copies its single input, multiplied by the per-model `scale` where one applies.

Follows mergekit 0.1.5 (`merge_methods/passthrough.py`): `scale` is per input and optional
(None there: the tensor itself), a Python float multiplied in the input dtype. Here an
unset scale is 1.0, which leaves the tensor as mergekit's None does: IEEE multiplication by
1 is exact (signed zeros and infinities kept), so the tensor is returned as is, uncopied,
whether the scale was unset or 1. The base is not a role: mergekit takes exactly one input,
so a base_model that is not the listed model is an error there and here.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge


@register_merge("passthrough", base="ignored", min_models=1, max_models=1,
                per_model={"scale": 1.0}, reference="https://github.com/arcee-ai/mergekit")
def merge_passthrough(base, tensors, per_model, shared):
    tensor, tensors[0] = tensors[0], None
    scale = per_model[0]["scale"]
    return tensor if scale == 1 else tensor * scale
