"""Merge kernels on plain tensors against mergekit's own, at their edge cases.

Each case runs one studbook merge method and mergekit 0.1.5's (`merge_tensors`, base
first) on the same small tensors and asks for the same tensor, bit for bit, in the same
dtype, and for the dtype the method declares (`result_dtype`), with the inputs untouched.
The recipe rows (test_merges.py) cover whole models; these cover the branches pico models
never reach: empty selections, zero variance, no overlap, singular angles, 1-D tensors,
arcee_fusion's sampled quantiles above 10^6 elements.
"""

from __future__ import annotations

import pytest
import torch

from studbook.operators import merges


def family(shape, children=3, dtype=torch.float32, seed=0, scale=0.02):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator)
    out = [base + scale * torch.randn(shape, generator=generator) for _ in range(children)]
    return base.to(dtype), [child.to(dtype) for child in out]


def ours(name, base, children, params=None, per_model=None):
    method = merges.get(name)
    shared = {**method.shared, **{k: v for k, v in (params or {}).items() if k in method.shared}}
    models = [{**method.per_model, **(p or {})} for p in (per_model or [{}] * len(children))]
    return method.merge(base, list(children), models, shared)


def theirs(name, base, children, params=None):
    from mergekit.merge_methods.api import merge_tensors

    if base is None:
        return merge_tensors(list(children), name, parameters=params or {})
    return merge_tensors([base, *children], name, parameters=params or {}, base_index=0)


def check(name, base, children, params=None, per_model=None):
    """ours == mergekit's, bit for bit and in dtype; inputs unchanged; returns the result."""
    before = [t.clone() for t in ([base] if base is not None else []) + list(children)]
    result = ours(name, base, children, params, per_model)
    after = ([base] if base is not None else []) + list(children)
    assert all(torch.equal(a, b) for a, b in zip(before, after)), f"{name} modified an input"
    expected = theirs(name, base, children, params)
    assert result.dtype == expected.dtype == merges.get(name).output_dtype(children[0].dtype)
    assert result.shape == expected.shape
    assert torch.equal(result, expected), f"{name} {params}: max diff {(result.double() - expected.double()).abs().max()}"
    return result


DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(24, 16), (16,)], ids=["2d", "1d"])
def test_every_method_matches_mergekit_in_every_dtype(shape, dtype):
    base, children = family(shape, dtype=dtype)
    check("model_stock", base, children)
    check("model_stock", base, children[:2], {"filter_wise": True})
    check("sce", base, children)
    check("sce", base, children, {"select_topk": 0.3, "int8_mask": True})
    check("nearswap", base, children[:1], {"t": 0.01})
    check("arcee_fusion", base, children[:1])
    check("ram", base, children, {"epsilon": 0.02})
    check("ramplus_tl", base, children, {"r": 0.5, "alpha": 0.3, "epsilon": 0.02})
    scaled = check("passthrough", None, children[:1], {"scale": 0.3}, [{"scale": 0.3}])
    assert not torch.equal(scaled, children[0])


def test_promoting_methods_write_float32_for_half_inputs():
    for name in ("arcee_fusion", "ramplus_tl"):
        assert merges.get(name).output_dtype(torch.bfloat16) == torch.float32
        assert merges.get(name).output_dtype(torch.float64) == torch.float64
    for name in ("model_stock", "sce", "nearswap", "ram", "passthrough"):
        assert merges.get(name).output_dtype(torch.bfloat16) == torch.bfloat16


def test_sce_select_topk_zero_and_zero_variance():
    base, children = family((12, 10))
    # select_topk 0: nothing selected, every task vector erased: the base (+0)
    assert torch.equal(check("sce", base, children, {"select_topk": 0.0}), base)
    # identical children: the variance is 0 everywhere, int(0 x p) = 0 selected
    same = [children[0]] * 3
    assert torch.equal(check("sce", base, same, {"select_topk": 0.5}), base)
    # without selection the identical task vectors average to themselves
    check("sce", base, same)
    # children equal to the base: all-zero task vectors, weights fall back to 1/k
    check("sce", base, [base.clone(), base.clone()])
    # a fraction so small that int(nonzero x p) truncates to 0
    check("sce", base, children, {"select_topk": 1e-3})


def test_sce_topk_ties_follow_torch_topk():
    base = torch.zeros(64, 8)
    # task vectors from a handful of values: many variances tie exactly at the cut
    levels = torch.tensor([-0.5, -0.25, 0.25, 0.5])
    generator = torch.Generator().manual_seed(3)
    children = [levels[torch.randint(4, base.shape, generator=generator)] for _ in range(3)]
    for topk in (0.1, 0.37, 0.5):
        check("sce", base, children, {"select_topk": topk})


def test_ram_without_overlap_and_with_full_overlap():
    base = torch.zeros(6, 4)
    first, second = base.clone(), base.clone()
    first[:3] = 0.5
    second[3:] = -0.25
    # disjoint supports: every change is unique and taken whole
    merged = check("ram", base, [first, second])
    assert torch.equal(merged, first + second)
    # ramplus_tl: no shared entries, rho 0, lambda 1
    check("ramplus_tl", base, [first, second])
    # full overlap: no unique entries; the unique count 0 is clamped at epsilon
    check("ram", base, [first, first * 3])
    check("ramplus_tl", base, [first, first * 3])
    # changes all below epsilon: nothing counts
    assert torch.equal(check("ram", base, [first * 1e-6, second * 1e-6]), base)
    # one shared entry, many unique ones: rho clamped at alpha
    third = first.clone()
    third[3, 0] = 0.125
    check("ramplus_tl", base, [third, second], {"r": 0.3, "alpha": 0.05})


def test_model_stock_singular_and_identical_children():
    base, children = family((10, 6))
    # identical children: cos 1, t = k / k = 1, the children's average
    same = [children[0].clone() for _ in range(3)]
    assert torch.allclose(check("model_stock", base, same), children[0])
    check("model_stock", base, same, {"filter_wise": True})
    # children equal to the base: zero norms clamped, cos 0, t 0
    check("model_stock", base, [base.clone(), base.clone()])
    # opposite offsets of two children: 1 + (k - 1) cos = 0, singular: the base is kept
    opposite = [base + (children[0] - base), base - (children[0] - base)]
    check("model_stock", base, opposite)
    check("model_stock", base, opposite, {"filter_wise": True})
    # a 1-D tensor per row (unsqueezed) and whole; negative zeros in the sum
    base1, children1 = family((9,), children=4)
    check("model_stock", base1, children1, {"filter_wise": True})
    check("model_stock", -torch.zeros(5), [-torch.zeros(5), torch.ones(5)])


def test_nearswap_edges():
    base, (child,) = family((8, 8), children=1)
    check("nearswap", base, [child], {"t": 0.0})  # nothing swapped
    check("nearswap", base, [child], {"t": 1.0})  # everything within t
    check("nearswap", base, [base.clone()], {"t": 0.001})  # identical: |diff| clamped at 1e-6
    check("nearswap", base, [child], {"t": 1})  # an int t, as YAML gives it


def test_arcee_fusion_on_1d_and_above_the_sampling_threshold():
    base, (child,) = family((33,), children=1)
    check("arcee_fusion", base, [child])
    check("arcee_fusion", base, [base.clone()])  # no change: zero importance, threshold 0
    # above 10^6 elements the quantiles are sampled with torch.randint: the same seed, the same draws
    base, (child,) = family((1_000_003,), children=1, seed=1)
    torch.manual_seed(11)
    result = ours("arcee_fusion", base, [child])
    torch.manual_seed(11)
    assert torch.equal(result, theirs("arcee_fusion", base, [child]))
    assert merges.get("arcee_fusion").deterministic is False


def test_passthrough_scale_unset_is_mergekit_none():
    _base, (child,) = family((5, 3), children=1, dtype=torch.bfloat16)
    child[0, 0] = -0.0
    result = ours("passthrough", None, [child])  # studbook's default 1.0
    assert result is child  # returned as is, no copy
    assert torch.equal(result, theirs("passthrough", None, [child]))  # mergekit's None
    assert torch.equal(result, theirs("passthrough", None, [child], {"scale": 1.0}))
    assert torch.equal(torch.signbit(result), torch.signbit(child * 1.0))
    check("passthrough", None, [child], {"scale": 2}, [{"scale": 2}])
