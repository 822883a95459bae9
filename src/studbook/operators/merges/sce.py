"""sce: select, calculate, erase (Wan et al. 2024, FuseChat, arXiv 2408.07990).

Select: with `select_topk` < 1, keep only the entries where the task vectors vary most
across the models (the top fraction of the per-entry variance). Calculate: each model's
weight is the mean square of its (selected) task vector, normalised to sum to 1 (the
paper's sum of squares; the same weights up to rounding). Erase: per
entry, drop the task vectors whose sign disagrees with the summed (unweighted) task vectors
(TIES's rule), then average the rest by those weights.

Follows mergekit 0.1.5 (`merge_methods/sce.py`) operation for operation rather than the
paper's prose: the top-k count is int(count_nonzero(variance) x select_topk) computed as a
float32 tensor product (not in Python double), ties among equal variances go the way
`torch.topk` orders them (the same call), the weights' sum is taken in the input dtype and
read back as a Python float (`.item()`), all-zero task vectors give equal weights 1/k, and
the erase denominator is clamped at 1e-6. There is no per-model weight. `int8_mask` only
changes the masks' storage type, as in mergekit.

What differs from a literal transcription is only what large tensors cost:
- The task vectors are never stacked: every per-entry step (the variance over the models,
  the selection product, signs, the majority, the erase mask, the weighted sum and its
  denominator) runs over column chunks of CHUNK_ELEMENTS entries per model, computed
  from the inputs in cache-sized buffers, spread over threads (see `each`); each entry sees
  mergekit's operations in its dtypes and order. Masks are 0/1 in the task vectors'
  dtype D (x * True and x * 1.0 are the same product, signed zeros included).
- The weights are mergekit's means over whole rows: each row's squares are written to
  one row buffer and reduced as one row. torch reduces each row of a (k, n) tensor
  whole, on one thread (it splits such a reduction between rows, never within one), so a
  row alone on one thread gives the same float; a single model (k = 1, where torch splits
  the row between threads) is reduced as mergekit does, on the caller's threads.
- The per-entry variance is torch.var's own arithmetic (Welford's update in float64, over
  the models in order, rounded to D) written as vectorised float64 operations
  (`_welford`): torch's CPU kernel runs it as a scalar loop, ~140 ns per entry. A probe
  checks once per process that both give the same bits, else torch.var itself runs.
- The top-k selection keeps what `torch.topk` keeps: the k largest |variances| are
  those at or above the k-th largest (found by numpy's linear-time `partition`) unless
  exact ties straddle that value; only then (or with NaNs) does `torch.topk` itself run,
  so which tied entries survive is always its choice.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import each, one_thread, spans, widest

CHUNK_ELEMENTS = 1 << 17  # columns per chunk (per model)


class _TaskVectors:
    """The (k, w) column chunks of mergekit's stacked `t - base` (times the selection
    mask, once it is set), each worker's in its own buffers (`scratch`)."""

    def __init__(self, base, tensors):
        import torch

        dtype = base.dtype
        for tensor in tensors:
            dtype = torch.promote_types(dtype, tensor.dtype)
        self.dtype = dtype
        self.base = base.reshape(-1)
        self.flats = [tensor.reshape(-1) for tensor in tensors]
        self.count, self.size = len(tensors), self.base.numel()
        self.spans = spans(self.size, CHUNK_ELEMENTS)
        self.width = widest(self.spans)
        self.mask = None  # the selection, flat uint8 0/1, or None: every entry kept

    def scratch(self, width: int | None = None):
        """One worker's buffers: the task vectors and two more (k, w)."""
        import torch

        tv = torch.empty((self.count, self.width if width is None else width), dtype=self.dtype)
        return tv, torch.empty_like(tv), torch.empty_like(tv)

    def row(self, index: int, out):
        """Row `index` of the (masked) task vectors, squared, into `out` (n,)."""
        import torch

        flat = self.flats[index]

        def work(span, state):
            start, stop = span
            part = state[0][0, :stop - start]
            torch.sub(flat[start:stop], self.base[start:stop], out=part)
            if self.mask is not None:
                part.mul_(self.mask[start:stop].to(self.dtype))
            torch.square(part, out=out[start:stop])

        each(self.spans, work, self.scratch)
        return out

    def chunk(self, start: int, stop: int, state):
        """Columns start:stop of the task vectors, and two more (k, w) buffers."""
        import torch

        # the last, narrower chunk gets contiguous buffers of its own
        tv, first, second = state if stop - start == self.width else self.scratch(stop - start)
        base = self.base[start:stop]
        for index, flat in enumerate(self.flats):
            torch.sub(flat[start:stop], base, out=tv[index])  # t - base, as stacked
        if self.mask is not None:  # task_vectors * mask.unsqueeze(0)
            tv.mul_(self.mask[start:stop].to(self.dtype))
        return tv, first, second


def _welford(tv):
    """torch.var(tv, dim=0, unbiased=False) for a (k, w) chunk, as torch's CPU kernel
    computes it (`WelfordOps` in float64, one column at a time, rows in order, the result
    rounded to the input's dtype), in vectorised float64 operations: each is the IEEE
    operation of the kernel's scalar loop, so the floats are the same."""
    import torch

    count = tv.shape[0]
    mean = torch.zeros(tv.shape[1:], dtype=torch.float64)
    m2 = torch.zeros_like(mean)
    x = torch.empty_like(mean)
    delta = torch.empty_like(mean)
    for index in range(count):
        x.copy_(tv[index])
        torch.sub(x, mean, out=delta)  # delta = data - mean
        step = delta / torch.tensor(float(index + 1), dtype=torch.float64)
        mean.add_(step)  # new_mean = mean + delta / new_nf
        x.sub_(mean)  # new_delta = data - new_mean
        m2.add_(delta.mul_(x))  # m2 + delta * new_delta
    return m2.div_(torch.tensor(float(count), dtype=torch.float64)).to(tv.dtype)


_WELFORD_CHECKED: list[bool] = []


def _variance_rows(tv):
    """torch.var(tv, dim=0, unbiased=False) over a chunk: `_welford` when it reproduces
    this torch's kernel on a probe (checked once per process), else torch.var itself,
    which is slow on CPU (about 140 ns per column: a scalar loop over strided rows)."""
    import torch

    if not _WELFORD_CHECKED:  # torch.var's split does not depend on threads: checked on one
        generator = torch.Generator().manual_seed(0)
        ok = True
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            for count in (1, 2, 3, 5):
                probe = torch.randn((count, 4096), generator=generator, dtype=torch.float64)
                probe = (probe * torch.logspace(-6, 3, 4096, dtype=torch.float64)
                         + torch.randn(4096, generator=generator, dtype=torch.float64)).to(dtype)
                ours, theirs = _welford(probe), torch.var(probe, dim=0, unbiased=False)
                ok = ok and torch.equal(ours, theirs) and torch.equal(ours.signbit(), theirs.signbit())
        _WELFORD_CHECKED.append(ok)
    if tv is None:
        return None
    if _WELFORD_CHECKED[0]:
        return _welford(tv)
    return torch.var(tv, dim=0, unbiased=False)


def _top(magnitudes, k: int):
    """Flat uint8 0/1: where `torch.topk(magnitudes, k, largest=True)` picks."""
    import numpy
    import torch

    count = magnitudes.numel()
    if k < count and not bool(torch.isnan(magnitudes).any()):
        values = magnitudes if magnitudes.dtype in (torch.float32, torch.float64) else magnitudes.float()
        # the k-th largest value: exact, as every float is (a copy, partitioned in place)
        cut = numpy.partition(values.numpy(), count - k)[count - k].item()
        del values
        mask = torch.ge(magnitudes, cut).view(torch.uint8)
        if int(mask.sum(dtype=torch.int64)) == k:  # no tie straddles the cut
            return mask
        del mask
    _, indices = torch.topk(magnitudes, k=k, largest=True)
    mask = torch.zeros(count, dtype=torch.uint8)
    mask[indices] = 1
    return mask


def sce_mask(task_vectors: _TaskVectors, density: float):
    """mergekit's `sce_mask` as flat uint8 0/1: the top `density` fraction of the nonzero
    variances (over the models, per entry)."""
    import torch

    size = task_vectors.size
    if density <= 0:
        return torch.zeros(size, dtype=torch.uint8)
    if density >= 1:
        return None
    var = torch.empty(size, dtype=task_vectors.dtype)
    _variance_rows(None)  # the probe, once, before the workers start

    def work(span, state):
        tv, _first, _second = task_vectors.chunk(*span, state)
        var[span[0]:span[1]] = _variance_rows(tv)  # torch.var(tv, dim=0, unbiased=False)

    each(task_vectors.spans, work, task_vectors.scratch)
    nonzero = torch.count_nonzero(var)
    k = int(nonzero * density)  # an int64 tensor times a float: a float32 product, truncated
    if k == 0:
        return torch.zeros(size, dtype=torch.uint8)
    return _top(var.abs_(), k)  # torch.topk(var.abs().view(-1), k=k, largest=True)


def sce_weight(task_vectors: _TaskVectors):
    """mergekit's `sce_weight`: mean squares, normalised by their sum as a Python float."""
    import torch

    count, dtype = task_vectors.count, task_vectors.dtype
    squares = torch.empty(task_vectors.size, dtype=dtype)
    if count == 1:  # one row: torch splits its mean between threads, as in mergekit
        weights = task_vectors.row(0, squares).view(1, -1).mean(dim=1)
    else:  # (k, n).mean(dim=1) reduces each row whole on one thread: the same row by row
        rows = []
        for index in range(count):
            task_vectors.row(index, squares)
            with one_thread():
                rows.append(squares.view(1, -1).mean(dim=1))
        weights = torch.cat(rows)
    del squares
    weight_sum = torch.sum(weights).item()
    if abs(weight_sum) < 1e-6:
        return torch.ones_like(weights) / weights.shape[0]
    return weights / weight_sum


@register_merge("sce", base="required", min_models=1,
                shared={"int8_mask": False, "select_topk": 1.0},
                reference="https://arxiv.org/abs/2408.07990")
def merge_sce(base, tensors, per_model, shared):
    import torch

    if not tensors:
        return base
    task_vectors = _TaskVectors(base, tensors)
    dtype = task_vectors.dtype
    select_topk = shared["select_topk"]
    if select_topk < 1:
        mask = sce_mask(task_vectors, select_topk)
        task_vectors.mask = (torch.ones(task_vectors.size, dtype=torch.uint8) if mask is None
                             else mask)  # x * 1 is x, but mergekit multiplies: so do we
    tv_weights = sce_weight(task_vectors).unsqueeze(-1)  # (k, 1)
    # the int8 masks compare the same -1/0/1 values, converted first as mergekit does
    mask_dtype = torch.int8 if shared["int8_mask"] else base.dtype
    result = torch.empty(base.shape, dtype=torch.promote_types(base.dtype, dtype))
    flat_result = result.view(-1)

    def work(span, state):
        start, stop = span
        tv, sign, erased = task_vectors.chunk(start, stop, state)
        torch.sign(tv, out=sign)
        # mergekit's get_mask(method="sum"): sign == (sum >= 0) * 2 - 1, in mask_dtype
        majority = (tv.sum(dim=0) >= 0).to(mask_dtype).mul_(2).sub_(1)
        if mask_dtype == dtype:
            torch.eq(sign, majority, out=erased)  # the erase mask, 0/1 in D
        else:
            erased.copy_(sign.to(mask_dtype) == majority)
        erased.mul_(tv_weights)  # tv_weights * erase_mask (1 * w, 0 * w)
        merged = tv.mul_(erased).sum(dim=0)  # (task_vectors * erased_weights).sum(dim=0)
        merged.div_(erased.sum(dim=0).clamp_(min=1e-6))
        torch.add(task_vectors.base[start:stop], merged, out=flat_result[start:stop])

    each(task_vectors.spans, work, task_vectors.scratch)
    tensors[:] = [None] * len(tensors)
    return result
