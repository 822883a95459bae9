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

QUANTILE_SAMPLE_SIZE = 1_000_000


def _promote_float32(dtype):
    import torch

    return torch.promote_types(dtype, torch.float32)


def importance(model, base):
    """|model - base| x KL(softmax(model) || softmax(base)) per row, as mergekit computes it."""
    import torch
    import torch.nn.functional as F

    diff = (model - base).abs()
    eps = 1e-8
    p = F.softmax(model, dim=-1) + eps
    q = F.softmax(base, dim=-1) + eps
    kl_div = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    del p, q
    return diff.mul_(kl_div)  # diff * kl_div, the same products


def fusion_threshold(scores):
    """median + 1.5 (q3 - q1), quantiles by mergekit's `approximate_quantiles`."""
    import torch

    flat = scores.reshape(-1)
    if flat.numel() > QUANTILE_SAMPLE_SIZE:  # with replacement, from the global generator
        flat = flat[torch.randint(flat.numel(), (QUANTILE_SAMPLE_SIZE,), device=flat.device)]
    sorted_scores, _ = torch.sort(flat)
    del flat
    q = torch.tensor([0.25, 0.5, 0.75])
    q1, median, q3 = sorted_scores[(q * (sorted_scores.numel() - 1)).long()]
    return median + 1.5 * (q3 - q1)


@register_merge("arcee_fusion", base="required", min_models=1, max_models=1,
                deterministic=False, reference="https://arcee.ai",
                result_dtype=_promote_float32)
def merge_arcee_fusion(base, tensors, per_model, shared):
    model, tensors[0] = tensors[0], None
    scores = importance(model, base)
    mask = (scores >= fusion_threshold(scores)).float()
    del scores
    return base + (model - base) * mask
