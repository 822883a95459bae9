"""slerp: spherical linear interpolation between the base and one other model.

Definition: K. Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985:
slerp(a, b; t) = sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b, with theta
the angle between a and b. t = 0 gives the base, t = 1 the other model.

Where it follows mergekit 0.1.5 (`merge_methods/slerp.py`), operation for operation, so the
tensors are mergekit's bit for bit:
- each tensor is one vector (flattened), walked in chunks of 1,048,576 elements: its norm is
  the norm of the chunk norms, the cosine the sum of the chunk dot products of the
  normalised chunks (one chunk below 1 Mi elements; above, a single-pass norm or dot
  differs in the last bits);
- the maths is in float32 (float64 for float64 inputs), `t` a float32 tensor and `1 - t`
  computed in float32; a norm at or below 1e-8 counts as 1;
- nearly parallel or antiparallel vectors (|cos theta| > 0.9995) fall back to linear
  interpolation;
- the result is written chunk by chunk into a buffer of the inputs' dtype.
PEFT has no SLERP.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge
from studbook.operators.merges._sphere import aligned, each, spans, working

DOT_THRESHOLD = 0.9995
EPS = 1e-8
CHUNK_ELEMENTS = 1024 * 1024  # mergekit's `_CHUNK_ELEMENTS`: bounds the float32 scratch
PIECE_ELEMENTS = 1 << 17  # the elementwise steps' pieces of a chunk


def slerp(t: float, v0, v1, dot_threshold: float = DOT_THRESHOLD, eps: float = EPS):
    """The slerp of two same-shaped tensors (v0 at t = 0), as mergekit's kernel computes it
    for one output (a batch of one).

    mergekit's chunks, norms and dot products are kept: each chunk's reductions are its
    calls, on the caller's threads (how a reduction splits between threads changes its
    last bits). The elementwise steps (casts to float32, the normalised chunks and their
    product, the weighted sum) run in smaller pieces spread over threads (see `each`)
    into buffers reused from chunk to chunk, with mergekit's operands in its order, and
    the result is written into the output in place: the same floats, without a parallel
    region and a fresh temporary per step."""
    import torch

    work = working(v0.dtype)
    a = v0.reshape(1, -1)
    b = v1.reshape(1, -1)
    # mergekit's batch parameter: torch.tensor([t], dtype=float32), one row per output
    t = torch.tensor([float(t)], dtype=work).reshape(-1, 1)
    if not a.shape[1]:
        return ((1 - t) * a + t * b).reshape(v0.shape).to(v0.dtype)

    size = a.shape[1]
    chunk = max(1, CHUNK_ELEMENTS // a.shape[0])
    width = min(chunk, size)
    buffer_a = torch.empty((1, width), dtype=work)
    buffer_b = torch.empty((1, width), dtype=work)
    same = a.dtype == work

    def chunks():
        for start in range(0, size, chunk):
            stop = min(start + chunk, size)
            yield start, stop, buffer_a[:, :stop - start], buffer_b[:, :stop - start]

    norm_a_parts, norm_b_parts = [], []
    for start, stop, into_a, into_b in chunks():
        x = a[:, start:stop] if same else into_a.copy_(a[:, start:stop])  # .to(work)
        y = b[:, start:stop] if same else into_b.copy_(b[:, start:stop])
        norm_a_parts.append(torch.linalg.vector_norm(x, dim=1, keepdim=True))
        norm_b_parts.append(torch.linalg.vector_norm(y, dim=1, keepdim=True))
        del x, y
    norm_a = torch.linalg.vector_norm(torch.stack(norm_a_parts), dim=0)  # norm of chunk norms
    norm_b = torch.linalg.vector_norm(torch.stack(norm_b_parts), dim=0)
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot_parts = []
    for start, stop, into_a, into_b in chunks():
        def product(span, _state, start=start, into_a=into_a, into_b=into_b):
            # x = a.to(work) / norm_a; y = b.to(work) / norm_b; x * y (into x's buffer)
            low, high = span
            x, y = into_a[:, low:high], into_b[:, low:high]
            if same:
                torch.div(a[:, start + low:start + high], norm_a, out=x)
                torch.div(b[:, start + low:start + high], norm_b, out=y)
            else:
                x.copy_(a[:, start + low:start + high]).div_(norm_a)
                y.copy_(b[:, start + low:start + high]).div_(norm_b)
            x.mul_(y)

        each(spans(stop - start, PIECE_ELEMENTS), product)
        dot_parts.append(into_a.sum(dim=1, keepdim=True))
    dot = torch.stack(dot_parts).sum(dim=0).clamp(-1, 1)
    linear = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear, 0, dot))  # finite on the unselected branch too
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    coef_b = torch.where(linear, t, torch.sin(t * theta) / sin_theta)

    result = torch.empty_like(a)  # the inputs' dtype: each chunk is cast on assignment

    pieces = spans(size, PIECE_ELEMENTS)
    piece = max((stop - start for start, stop in pieces), default=0)

    def scratch():  # one worker's two buffers
        return torch.empty((1, piece), dtype=work), torch.empty((1, piece), dtype=work)

    def interpolate(span, state):  # coef_a * x + coef_b * y, with x, y the pieces in `work`
        start, stop = span
        into_a, into_b = state[0][:, :stop - start], state[1][:, :stop - start]
        x = a[:, start:stop] if same else into_a.copy_(a[:, start:stop])
        y = b[:, start:stop] if same else into_b.copy_(b[:, start:stop])
        x = torch.mul(coef_a, x, out=into_a)
        y = torch.mul(coef_b, y, out=into_b)
        if result.dtype == work:
            torch.add(x, y, out=result[:, start:stop])
        else:
            result[:, start:stop] = x.add_(y)

    each(pieces, interpolate, scratch)
    return result.reshape(v0.shape)


@register_merge("slerp", base="required", min_models=1, max_models=1, per_model={},
                shared={"t": None}, reference="https://en.wikipedia.org/wiki/Slerp")
def merge_slerp(base, tensors, per_model, shared):
    base, tensors, _dtype = aligned(base, tensors)
    other, tensors[0] = tensors[0], None
    return slerp(float(shared["t"]), base, other)
