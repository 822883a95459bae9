"""slerp: spherical linear interpolation between the base and one other model (Shoemake 1985).

slerp(a, b; t) = sin((1-t) theta)/sin(theta) a + sin(t theta)/sin(theta) b, with theta
the angle between a and b; nearly parallel vectors (|cos theta| > 0.9995) fall back to
linear interpolation. Each tensor is one vector (flattened), as in mergekit; t = 0 gives
the base. PEFT has no SLERP, so this is written here, in float32.
"""

from __future__ import annotations

from studbook.operators.merges import register_merge

DOT_THRESHOLD = 0.9995
EPS = 1e-8


def slerp(t: float, v0, v1):
    import torch

    work = torch.float64 if v0.dtype == torch.float64 else torch.float32
    t = torch.tensor(t, dtype=work)  # 1 - t in the working precision, as mergekit computes it
    a = v0.reshape(1, -1).to(work)
    b = v1.reshape(1, -1).to(work)
    norm_a = torch.linalg.vector_norm(a, dim=1, keepdim=True)
    norm_b = torch.linalg.vector_norm(b, dim=1, keepdim=True)
    norm_a = torch.where(norm_a > EPS, norm_a, 1)
    norm_b = torch.where(norm_b > EPS, norm_b, 1)
    dot = ((a / norm_a) * (b / norm_b)).sum(dim=1, keepdim=True).clamp(-1, 1)
    linear = dot.abs() > DOT_THRESHOLD
    theta = torch.acos(torch.where(linear, 0, dot))
    sin_theta = torch.sin(theta)
    coef_a = torch.where(linear, 1 - t, torch.sin((1 - t) * theta) / sin_theta)
    coef_b = torch.where(linear, t, torch.sin(t * theta) / sin_theta)
    return (coef_a * a + coef_b * b).reshape(v0.shape).to(v0.dtype)


@register_merge("slerp", base="required", min_models=1, max_models=1, per_model={},
                shared={"t": None}, reference="https://en.wikipedia.org/wiki/Slerp")
def merge_slerp(base, tensors, per_model, shared):
    return slerp(float(shared["t"]), base, tensors[0])
