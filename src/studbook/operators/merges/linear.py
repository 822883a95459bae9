"""linear: a weighted average of the models (Wortsman et al. 2022, model soups).

mergekit's definition: sum_i w_i * theta_i, divided by sum_i w_i when `normalize`. The
weights are float32 (float64 for float64 inputs) and their sum is taken in that dtype, not
in Python's double: for weights [0.7, 0.4, 0.33] the two denominators differ by one ulp,
and so would the tensors. The base is an ordinary input (mergekit averages in a listed or
appended base_model), accumulated in input order with `addcmul_`, as mergekit does.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import each, spans, widest

CHUNK_ELEMENTS = 1 << 17  # entries per chunk


@register_merge("linear", base="ignored", min_models=1, per_model={"weight": None},
                shared={"normalize": True}, reference="https://arxiv.org/abs/2203.05482")
def merge_linear(base, tensors, per_model, shared):
    """Chunk by chunk, spread over threads (see `each`): each chunk of the sum is zeroed,
    accumulated input by input with `addcmul_` and divided while it is in cache, then
    written out (cast to the inputs' dtype): the same operations per entry as on the whole
    tensor, one read of each input instead of a read and a write of the sum per input."""
    import torch

    dtype, shape = tensors[0].dtype, tensors[0].shape
    work = torch.float64 if dtype == torch.float64 else torch.float32
    weights = torch.tensor([float(p["weight"]) for p in per_model], dtype=work)
    coefficients = weights.unbind(0)
    divisor = weights.sum() if shared["normalize"] else None
    flats = [tensor.reshape(-1) for tensor in tensors]
    tensors[:] = [None] * len(tensors)
    result = torch.empty(shape, dtype=dtype)
    flat_result = result.view(-1)
    chunks = spans(flat_result.numel(), CHUNK_ELEMENTS)
    width = widest(chunks)

    def scratch():  # the sum in `work`, when the output is in another dtype
        return None if dtype == work else torch.empty(width, dtype=work)

    def add(span, buffer):
        start, stop = span
        part = flat_result[start:stop] if buffer is None else buffer[:stop - start]
        part.zero_()  # torch.zeros(shape, dtype=work)
        for flat, coefficient in zip(flats, coefficients):
            part.addcmul_(flat[start:stop], coefficient)
        if divisor is not None:
            part.div_(divisor)
        if buffer is not None:
            flat_result[start:stop] = part  # result.to(dtype)

    each(chunks, add, scratch)
    return result
