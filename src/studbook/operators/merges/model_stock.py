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
from studbook.operators.merges._sphere import each, spans


@register_merge("model_stock", base="required", min_models=2, shared={"filter_wise": False},
                reference="https://arxiv.org/abs/2403.19522")
def merge_model_stock(base, tensors, per_model, shared):
    """mergekit's reductions (the offsets' norms and pairwise dot products, over each
    vector) are its calls on whole tensors, on the caller's threads; the elementwise
    steps (offsets and sum, each child read once; the pairwise products, into one reused
    buffer; the average and the interpolation, written over the sum) run over chunks on
    threads (see `each`), with mergekit's operands in its order: the same floats."""
    import torch

    if any(tensor.dtype != base.dtype for tensor in tensors):
        return _model_stock_mixed(base, tensors, shared)
    dtype = base.dtype
    out_shape = base.shape
    filter_wise = bool(shared["filter_wise"])
    w_0 = base
    if filter_wise:
        if w_0.dim() == 1:
            w_0 = w_0.unsqueeze(0)
    else:
        w_0 = w_0.reshape(-1)
    shape = w_0.shape  # the vectors: the whole tensor, or its rows (the last axis)
    flat_base = w_0.reshape(-1)
    size = flat_base.numel()
    count = len(tensors)
    offsets = [torch.empty(shape, dtype=dtype) for _ in range(count)]
    total = torch.empty(shape, dtype=dtype)
    flat_total = total.view(-1)
    chunks = spans(size, _CHUNK_ELEMENTS)
    for index in range(count):
        # consume the caller's list: each child is read once, into its offset and the sum
        weight, tensors[index] = tensors[index], None
        flat, flat_offset = weight.reshape(-1), offsets[index].view(-1)

        def offset_and_sum(span, _state, index=index, flat=flat, flat_offset=flat_offset):
            start, stop = span
            torch.sub(flat[start:stop], flat_base[start:stop], out=flat_offset[start:stop])  # weight - w_0
            if index == 0:  # Python's sum starts from 0: 0 + theta_0
                torch.add(flat[start:stop], 0, out=flat_total[start:stop])
            else:
                flat_total[start:stop].add_(flat[start:stop])

        each(chunks, offset_and_sum)
        del weight, flat
    norms = [torch.norm(offset, dim=-1) for offset in offsets]  # as recomputed per pair there
    product = torch.empty(shape, dtype=dtype)
    flat_product = product.view(-1)
    cos_thetas = []
    for i, offset_a in enumerate(offsets):
        for j in range(i + 1, count):
            norm_product = norms[i] * norms[j]
            flat_a, flat_b = offset_a.view(-1), offsets[j].view(-1)

            def multiply(span, _state, flat_a=flat_a, flat_b=flat_b):  # offset_a * offset_b
                torch.mul(flat_a[span[0]:span[1]], flat_b[span[0]:span[1]], out=flat_product[span[0]:span[1]])

            each(chunks, multiply)
            cos_thetas.append((product.sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1))
    offsets = norms = product = flat_product = None  # freed
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    safe_denominator = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos_theta), (count * cos_theta) / safe_denominator)
    complement = 1 - t
    # average = sum(ws) / count; t * average + (1 - t) * w_0, written over the sum. t is
    # one value for the whole vector, or one per row: then the chunks are blocks of rows
    rows = t.numel()
    columns = size // rows if rows else 0
    totals, bases = total.view(rows, columns), flat_base.view(rows, columns)
    if rows > 1:
        t, complement = t.reshape(rows, 1), complement.reshape(rows, 1)
    if rows == 1:
        blocks = [(slice(None), slice(start, stop)) for start, stop in spans(columns, _CHUNK_ELEMENTS)]
    else:
        step = max(1, _CHUNK_ELEMENTS // max(columns, 1))
        blocks = [(slice(start, min(start + step, rows)), slice(None)) for start in range(0, rows, step)]

    def interpolate(block, _state):
        row_part, column_part = block
        average = totals[row_part, column_part].div_(count)
        part_t = t if rows == 1 else t[row_part]
        part_complement = complement if rows == 1 else complement[row_part]
        product = torch.mul(part_t, average)
        torch.add(product, torch.mul(part_complement, bases[row_part, column_part]), out=average)

    each(blocks, interpolate)
    return total.reshape(out_shape)


_CHUNK_ELEMENTS = 1 << 17  # entries per chunk of the elementwise passes


def _model_stock_mixed(base, tensors, shared):
    """Inputs of several dtypes: the whole-tensor transcription, each operation promoting
    its own operands (mergekit casts every input to one dtype first, so with mixed dtypes
    the two can differ; kept as it was, unchunked, so its tensors stay what they were)."""
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
        weight, tensors[index] = tensors[index], None
        if shared["filter_wise"]:
            weight = weight.unsqueeze(0) if rows else weight
        else:
            weight = weight.reshape(-1)
        offsets.append(weight - w_0)
        if index == 0:
            total = total + weight
        else:
            total.add_(weight)
        del weight
    norms = [torch.norm(offset, dim=-1) for offset in offsets]
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
    average = total.div_(count)
    return (t * average + (1 - t) * w_0).reshape(out_shape)
