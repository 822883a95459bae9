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
from studbook.operators.merges._sphere import aligned, working

DOT_THRESHOLD = 0.9995
EPS = 1e-8
CHUNK_ELEMENTS = 1024 * 1024  # mergekit's `_CHUNK_ELEMENTS`: bounds the float32 scratch


def slerp(t: float, v0, v1, dot_threshold: float = DOT_THRESHOLD, eps: float = EPS):
    """The slerp of two same-shaped tensors (v0 at t = 0), as mergekit's kernel computes it
    for one output (a batch of one)."""
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
    norm_a_parts, norm_b_parts = [], []
    for start in range(0, size, chunk):
        x = a[:, start:start + chunk].to(work)
        y = b[:, start:start + chunk].to(work)
        norm_a_parts.append(torch.linalg.vector_norm(x, dim=1, keepdim=True))
        norm_b_parts.append(torch.linalg.vector_norm(y, dim=1, keepdim=True))
        del x, y
    norm_a = torch.linalg.vector_norm(torch.stack(norm_a_parts), dim=0)  # norm of chunk norms
    norm_b = torch.linalg.vector_norm(torch.stack(norm_b_parts), dim=0)
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot_parts = []
    for start in range(0, size, chunk):
        x = a[:, start:start + chunk].to(work) / norm_a
        y = b[:, start:start + chunk].to(work) / norm_b
        dot_parts.append((x * y).sum(dim=1, keepdim=True))
        del x, y
    dot = torch.stack(dot_parts).sum(dim=0).clamp(-1, 1)
    linear = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(linear, 0, dot))  # finite on the unselected branch too
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    coef_b = torch.where(linear, t, torch.sin(t * theta) / sin_theta)

    result = torch.empty_like(a)  # the inputs' dtype: each chunk is cast on assignment
    for start in range(0, size, chunk):
        x = a[:, start:start + chunk].to(work)
        y = b[:, start:start + chunk].to(work)
        result[:, start:start + chunk] = coef_a * x + coef_b * y
        del x, y
    return result.reshape(v0.shape)


@register_merge("slerp", base="required", min_models=1, max_models=1, per_model={},
                shared={"t": None}, reference="https://en.wikipedia.org/wiki/Slerp")
def merge_slerp(base, tensors, per_model, shared):
    base, tensors, _dtype = aligned(base, tensors)
    other, tensors[0] = tensors[0], None
    return slerp(float(shared["t"]), base, other)
