"""ram and ramplus_tl: Reinforced Agent Merging (mergekit's reference: arXiv 2601.13572,
https://arxiv.org/abs/2601.13572).

An entry of a task vector counts when its magnitude exceeds `epsilon`. Entries that only
one model changes are taken whole; entries several models change are averaged over those
models (not over all of them, which would dilute unique updates). ramplus_tl ("tensor
local") also scales each model's unique entries by 1 + r x clamp(shared / unique, 0, alpha),
its counts of overlapping and unique entries in this tensor.

Follows mergekit 0.1.5 (`merge_methods/ram.py`) operation for operation, including where
it departs from plain arithmetic: counts are int64, the unique count is clamped at
`epsilon` (an int64 tensor clamped by a float becomes float32), so ramplus_tl's factors
are float32 and bfloat16/float16 inputs give a float32 result, written as such
(`result_dtype`); ram stays in the input dtype. No per-model weights.

What differs from a literal transcription is only what large tensors cost. Every
operation but ramplus_tl's per-model counts is elementwise across the models (the sum
over the model axis included), so it runs over column chunks of CHUNK_ELEMENTS entries
per model, straight from the inputs, spread over threads (see `each`), and the result is
written chunk by chunk: the working set is the inputs, the output and a few MB, instead
of several (k, n) float and int64 temporaries. Each output element sees the same
arithmetic as in mergekit, in the same dtypes and order:
- the masks are 0/1 in the task vectors' dtype D instead of bool, and the per-entry
  counts exact small integers (summed in float32, then cast to D for the division):
  x * True and x * 1.0 are the same product (signed zeros included), and an integer
  count divides alike from int64 or from D (both convert the same exact value to D);
- ramplus_tl's per-model counts are integer sums (exact in any order), taken over the
  same chunks in a first pass; a model's unique count is its nonzero count minus its
  shared count (every nonzero entry is either).
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import each, spans, widest

_REFERENCE = "https://arxiv.org/abs/2601.13572"
CHUNK_ELEMENTS = 1 << 17  # columns per chunk (per model): the chunk's buffers stay in cache


def _promote_float32(dtype):
    import torch

    return torch.promote_types(dtype, torch.float32)


class _Chunks:
    """Column chunks of mergekit's `_prepare_ram_vectors`: per chunk, the (k, w) task
    vectors `tv` and `nonzero` (0/1 in D) and the per-entry counts (1, w) in float32,
    in a worker's buffers (`scratch`), reused from chunk to chunk."""

    def __init__(self, base, tensors, epsilon: float):
        import torch

        dtype = base.dtype
        for tensor in tensors:
            dtype = torch.promote_types(dtype, tensor.dtype)
        self.dtype, self.epsilon = dtype, epsilon
        self.base = base.reshape(-1)
        self.flats = [tensor.reshape(-1) for tensor in tensors]
        self.count, self.size = len(tensors), self.base.numel()
        self.spans = spans(self.size, CHUNK_ELEMENTS)
        self.width = widest(self.spans)

    def scratch(self, width: int | None = None):
        """One worker's buffers: task vectors, magnitudes, masks (k, w) and three (1, w)."""
        import torch

        width = self.width if width is None else width
        tv = torch.empty((self.count, width), dtype=self.dtype)
        return tv, torch.empty_like(tv), torch.empty_like(tv), torch.empty((3, 1, width), dtype=self.dtype)

    def chunk(self, start: int, stop: int, state):
        """The chunk's tv, nonzero (0/1 in D), counts (float32) and (1, w) scratch rows."""
        import torch

        # the last, narrower chunk gets contiguous buffers of its own
        tv, magnitude, nonzero, rows = state if stop - start == self.width else self.scratch(stop - start)
        base = self.base[start:stop]
        for index, flat in enumerate(self.flats):
            torch.sub(flat[start:stop], base, out=tv[index])  # t - base, as stacked
        torch.abs(tv, out=magnitude)
        torch.gt(magnitude, self.epsilon, out=nonzero)  # tv_flat.abs() > epsilon, as 0/1
        counts = nonzero.sum(dim=0, keepdim=True, dtype=torch.float32)  # contrib_counts
        return tv, nonzero, counts, rows


def _merge(base, chunks: _Chunks, lambda_=None):
    """base + sum over models of (tv_z * unique [* lambda_]) + (tv_z * overlap / counts),
    chunk by chunk; `lambda_` (k,) float32 for ramplus_tl."""
    import torch

    factors = None if lambda_ is None else lambda_.unsqueeze(-1)
    dtype = chunks.dtype
    # the result's dtype, as mergekit's expression promotes it
    scaled_dtype = dtype if factors is None else torch.promote_types(dtype, factors.dtype)
    result = torch.empty(base.shape, dtype=torch.promote_types(base.dtype, scaled_dtype))
    flat_result = result.view(-1)
    flat_base = chunks.base

    def work(span, state):
        start, stop = span
        tv, nonzero, counts, (overlap_mask, unique_mask, divisor) = chunks.chunk(start, stop, state)
        torch.gt(counts, 1, out=overlap_mask)  # contrib_counts > 1
        torch.eq(counts, 1, out=unique_mask)  # contrib_counts == 1
        divisor.copy_(counts.clamp_(min=1))  # contrib_counts.clamp(min=1), in D
        tv_z = tv.mul_(nonzero)  # tv_flat * nonzero_mask
        overlap = torch.mul(tv_z, overlap_mask, out=nonzero)  # tv_z * overlap_mask
        overlap.div_(divisor)  # ... / contrib_counts.clamp(min=1)
        unique = tv_z.mul_(unique_mask)  # tv_z * unique_mask (tv_z is not used again)
        if factors is not None:
            unique = unique.mul_(factors) if unique.dtype == scaled_dtype else unique * factors
        merged = unique.add_(overlap).sum(dim=0)
        torch.add(flat_base[start:stop], merged, out=flat_result[start:stop])

    each(chunks.spans, work, chunks.scratch)
    return result


@register_merge("ram", base="required", min_models=1, shared={"epsilon": 1e-5},
                reference=_REFERENCE)
def merge_ram(base, tensors, per_model, shared):
    if not tensors:
        return base
    result = _merge(base, _Chunks(base, tensors, shared["epsilon"]))
    tensors[:] = [None] * len(tensors)
    return result


@register_merge("ramplus_tl", base="required", min_models=1,
                shared={"r": 0.1, "alpha": 0.2, "epsilon": 1e-5}, reference=_REFERENCE,
                result_dtype=_promote_float32)
def merge_ramplus_tl(base, tensors, per_model, shared):
    import torch

    if not tensors:
        return base
    epsilon = shared["epsilon"]
    chunks = _Chunks(base, tensors, epsilon)
    # (nonzero_mask & overlap_mask).sum(dim=1) and (nonzero_mask & unique_mask).sum(dim=1):
    # int64 totals of float32 chunk sums, each exact (a chunk has far fewer than 2^24
    # entries), added in whatever order the chunks come: integers
    partials = []

    def count(span, state):
        tv, nonzero, counts, rows = chunks.chunk(*span, state)
        overlap_mask = torch.gt(counts, 1, out=rows[0])
        partials.append((nonzero.sum(dim=1, dtype=torch.float32).to(torch.int64),
                         nonzero.mul_(overlap_mask).sum(dim=1, dtype=torch.float32).to(torch.int64)))

    each(chunks.spans, count, chunks.scratch)
    nonzero_counts = torch.zeros(len(tensors), dtype=torch.int64)
    shared_counts = torch.zeros(len(tensors), dtype=torch.int64)
    for nonzero_part, shared_part in partials:
        nonzero_counts += nonzero_part
        shared_counts += shared_part
    unique_counts = nonzero_counts - shared_counts
    rho = shared_counts / unique_counts.clamp(min=epsilon)
    lambda_ = 1 + shared["r"] * rho.clamp(min=0, max=shared["alpha"])
    result = _merge(base, chunks, lambda_)
    tensors[:] = [None] * len(tensors)
    return result
