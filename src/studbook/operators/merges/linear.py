"""linear: a weighted average of the models (Wortsman et al. 2022, model soups).

mergekit's definition: sum_i w_i * theta_i, divided by sum_i w_i when `normalize`. The
weights are float32 (float64 for float64 inputs) and their sum is taken in that dtype, not
in Python's double: for weights [0.7, 0.4, 0.33] the two denominators differ by one ulp,
and so would the tensors. The base is an ordinary input (mergekit averages in a listed or
appended base_model), accumulated in input order with `addcmul_`, as mergekit does.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge


@register_merge("linear", base="ignored", min_models=1, per_model={"weight": None},
                shared={"normalize": True}, reference="https://arxiv.org/abs/2203.05482")
def merge_linear(base, tensors, per_model, shared):
    import torch

    dtype, shape = tensors[0].dtype, tensors[0].shape
    work = torch.float64 if dtype == torch.float64 else torch.float32
    weights = torch.tensor([float(p["weight"]) for p in per_model], dtype=work)
    result = torch.zeros(shape, dtype=work)
    for index, weight in enumerate(weights.unbind(0)):
        tensor, tensors[index] = tensors[index], None  # freed once added
        result.addcmul_(tensor, weight)
        del tensor
    if shared["normalize"]:
        result.div_(weights.sum())
    return result.to(dtype)
