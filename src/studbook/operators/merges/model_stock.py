"""model_stock: interpolate towards the children's average by their angle (Jang, Yun & Han 2024,
"Model Stock: All we need is just a few fine-tuned models", arXiv 2403.19522).

With offsets o_i = theta_i - base of the k children, cos is the mean pairwise cosine of the
offsets, t = k cos / (1 + (k - 1) cos), and the result is t * mean(theta_i) + (1 - t) * base.

Follows mergekit 0.1.5 (`merge_methods/model_stock.py`) rather than the paper where they
part: the paper derives t from the angle between fine-tuned models per layer; mergekit
measures it per tensor (flattened), or per row with `filter_wise` (a 1-D tensor as one
row), as the mean cosine over all pairs of the k >= 2 children. Its safeguards are kept:
norm products clamped at 1e-6, cosines at [-1, 1], and the base kept (t = 0) where the
denominator is below 1e-6. All maths is in the input dtype, with mergekit's operations in
its order: the average is Python's `sum` (0 + theta_0 + theta_1 ..., so a -0.0 becomes +0.0
as there), then divided by k.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge


@register_merge("model_stock", base="required", min_models=2, shared={"filter_wise": False},
                reference="https://arxiv.org/abs/2403.19522")
def merge_model_stock(base, tensors, per_model, shared):
    import torch

    out_shape = base.shape
    w_0 = base
    if shared["filter_wise"]:
        rows = w_0.dim() == 1
        if rows:
            w_0 = w_0.unsqueeze(0)
    else:
        w_0 = w_0.reshape(-1)
    count = len(tensors)
    offsets, total = [], 0
    for index in range(count):
        # consume the caller's list: each child is freed once in the offsets and the sum
        weight, tensors[index] = tensors[index], None
        if shared["filter_wise"]:
            weight = weight.unsqueeze(0) if rows else weight
        else:
            weight = weight.reshape(-1)
        offsets.append(weight - w_0)
        if index == 0:
            total = total + weight  # Python's sum starts from 0: 0 + theta_0 is a new tensor
        else:
            total.add_(weight)  # the same elementwise additions, in place
        del weight
    norms = [torch.norm(offset, dim=-1) for offset in offsets]  # as recomputed per pair there
    cos_thetas = []
    for i, offset_a in enumerate(offsets):
        for j in range(i + 1, count):
            norm_product = norms[i] * norms[j]
            cos_thetas.append(((offset_a * offsets[j]).sum(dim=-1)
                               / norm_product.clamp(min=1e-6)).clamp(-1, 1))
    del offsets, norms
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    safe_denominator = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos_theta), (count * cos_theta) / safe_denominator)
    average = total.div_(count)  # sum(ws) / count
    return (t * average + (1 - t) * w_0).reshape(out_shape)
