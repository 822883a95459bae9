"""arcee_fusion: take the model's change only where it matters most (Arcee AI,
https://arcee.ai; no paper).

Each entry's importance is |model - base| times the KL divergence between the softmaxes of
the model's and the base's rows (last dimension); the change is kept where the importance
reaches median + 1.5 x the interquartile range of all importances, and dropped elsewhere.

Follows mergekit 0.1.5 (`merge_methods/arcee_fusion.py`), the method's only definition,
operation for operation: softmaxes offset by 1e-8, quantiles read from the sorted
importances at indices (float32 [0.25, 0.5, 0.75] x (n - 1)).long() (no interpolation),
and a float32 mask, so bfloat16/float16 inputs give a float32 result, which mergekit writes
as such (`result_dtype`). Above 1,000,000 elements the quantiles come from 1,000,000
entries drawn with replacement by `torch.randint` from torch's global generator (seeded
once per merge, tensors in mergekit's order): the method is therefore registered as not
deterministic, since nearly every real checkpoint has such tensors; on tensors at or below
the threshold (all of the pico models') it draws nothing and is deterministic.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import each, spans, widest

QUANTILE_SAMPLE_SIZE = 1_000_000


def _promote_float32(dtype):
    import torch

    return torch.promote_types(dtype, torch.float32)


ROWS_ELEMENTS = 1 << 17  # entries per block of rows in the importance pass
CHUNK_ELEMENTS = 1 << 17  # entries per chunk of the final pass


def _importance(model, base):
    """mergekit's `_compute_importance` on whole tensors."""
    import torch
    import torch.nn.functional as F

    diff = (model - base).abs()
    eps = 1e-8
    p = F.softmax(model, dim=-1) + eps
    q = F.softmax(base, dim=-1) + eps
    kl_div = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    del p, q
    return diff.mul_(kl_div)  # diff * kl_div, the same products


def importance(model, base):
    """|model - base| x KL(softmax(model) || softmax(base)) per row, as mergekit computes it.

    Every step is per row (the last axis): softmax normalises each row on its own, and
    torch reduces each row of a tensor of two or more rows whole, on one thread. So a
    tensor of several rows is computed in blocks of rows, one thread each (see `each`),
    each block's temporaries in cache, into one output: the same floats. A single row (a
    1-D tensor, or one row), whose sum torch may split between threads, is computed whole."""
    import torch

    columns = model.shape[-1] if model.dim() else 1
    rows = model.numel() // columns if columns else 0
    if model.dim() < 2 or rows < 2:
        return _importance(model, base)
    dtype = torch.promote_types(model.dtype, base.dtype)
    model_rows, base_rows = model.reshape(rows, columns), base.reshape(rows, columns)
    scores = torch.empty((rows, columns), dtype=dtype)
    step = max(1, ROWS_ELEMENTS // columns)

    def block(span, _state):
        start, stop = span
        scores[start:stop] = _importance(model_rows[start:stop], base_rows[start:stop])

    each([(start, min(start + step, rows)) for start in range(0, rows, step)], block)
    return scores.view(model.shape)


def fusion_threshold(scores):
    """median + 1.5 (q3 - q1), quantiles by mergekit's `approximate_quantiles`: the
    entries of its sorted (sampled) scores at indices ([0.25, 0.5, 0.75] x (n - 1)).long().

    Those three order statistics are exact values, whatever sorts or selects them: numpy's
    linear-time `partition` gives them (NaNs last, as `torch.sort` puts them) without
    sorting a million entries; the sample is mergekit's `torch.randint` draw."""
    import numpy
    import torch

    flat = scores.reshape(-1)
    if flat.numel() > QUANTILE_SAMPLE_SIZE:  # with replacement, from the global generator
        flat = flat[torch.randint(flat.numel(), (QUANTILE_SAMPLE_SIZE,), device=flat.device)]
    q = torch.tensor([0.25, 0.5, 0.75])
    indices = (q * (flat.numel() - 1)).long()
    values = flat if flat.dtype in (torch.float32, torch.float64) else flat.float()
    ranked = numpy.partition(values.numpy(), indices.numpy())
    del values
    q1, median, q3 = torch.from_numpy(ranked[indices.numpy()]).to(flat.dtype)
    return median + 1.5 * (q3 - q1)


@register_merge("arcee_fusion", base="required", min_models=1, max_models=1,
                deterministic=False, reference="https://arcee.ai",
                result_dtype=_promote_float32)
def merge_arcee_fusion(base, tensors, per_model, shared):
    """base + (model - base) * (scores >= threshold).float(), the last step chunk by
    chunk over threads (see `each`), its mask 0/1 float32 written by the comparison."""
    import torch

    model, tensors[0] = tensors[0], None
    scores = importance(model, base)
    threshold = fusion_threshold(scores)
    delta_dtype = torch.promote_types(model.dtype, base.dtype)
    product_dtype = torch.promote_types(delta_dtype, torch.float32)
    result = torch.empty(base.shape, dtype=torch.promote_types(base.dtype, product_dtype))
    flat_result, flat_scores = result.view(-1), scores.reshape(-1)
    flat_model, flat_base = model.reshape(-1), base.reshape(-1)
    chunks = spans(flat_result.numel(), CHUNK_ELEMENTS)
    width = widest(chunks)

    def scratch():
        return torch.empty(width, dtype=torch.float32), torch.empty(width, dtype=delta_dtype)

    def work(span, state):
        start, stop = span
        mask = torch.ge(flat_scores[start:stop], threshold, out=state[0][:stop - start])
        delta = torch.sub(flat_model[start:stop], flat_base[start:stop], out=state[1][:stop - start])
        product = mask.mul_(delta) if product_dtype == torch.float32 else delta * mask
        torch.add(flat_base[start:stop], product, out=flat_result[start:stop])

    each(chunks, work, scratch)
    return result
