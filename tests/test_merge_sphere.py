"""The spherical merges (slerp, nuslerp, multislerp, karcher) against mergekit's own kernels.

tests/test_merges.py runs their recipe rows on pico models; here each method meets mergekit
0.1.5 on plain tensors, for what pico models do not reach: slerp above mergekit's 1 Mi-element
chunk, and every branch point (parallel and antipodal vectors, zero vectors, cancelling
weights, karcher's early exits). Equality is `torch.equal` plus the same dtype.
"""

from __future__ import annotations

import pytest
import torch
from mergekit.merge_methods.api import merge_tensors

from studbook.operators import merges
from studbook.operators.merges import slerp as slerp_module


BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
        torch.float16: torch.int16}


def same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Bit for bit: torch.equal, and the same bits too (signed zeros, NaNs where the maths
    of both divides 0 by 0)."""
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert torch.equal(ours.isnan(), theirs.isnan())
    assert torch.equal(ours.nan_to_num(0.0), theirs.nan_to_num(0.0)), (ours - theirs).abs().max()
    bits = BITS[ours.dtype]
    assert torch.equal(ours.contiguous().view(bits), theirs.contiguous().view(bits))


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def studbook(name: str, base, tensors, per_model=None, shared=None):
    """A registered method as run_merge calls it, on copies: checks the inputs are untouched."""
    method = merges.get(name)
    before = [t.clone() for t in ([base] if base is not None else []) + tensors]
    per_model = per_model or [{} for _ in tensors]
    result = method.merge(base, list(tensors), per_model, {**method.shared, **(shared or {})})
    after = ([base] if base is not None else []) + tensors
    assert all(torch.equal(b, a) for b, a in zip(before, after))
    return result


# ---------------------------------------------------------------------------------- slerp

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_slerp_above_one_chunk_is_mergekits_kernel(dtype, monkeypatch):
    """mergekit walks a tensor in chunks of 1,048,576 elements (norm of chunk norms, summed
    chunk dots): above one chunk a single-pass norm and dot give other last bits."""
    base = randn(1100, 1000, seed=1, dtype=dtype)  # 1.1 Mi elements: two chunks
    other = (base.float() + 0.5 * randn(1100, 1000, seed=2)).to(dtype)
    assert base.numel() > slerp_module.CHUNK_ELEMENTS
    for t in (0.3, 0.7):
        theirs = merge_tensors([base, other], "slerp", parameters={"t": t}, base_index=0)
        same(studbook("slerp", base, [other], shared={"t": t}), theirs)
        same(slerp_module.slerp(t, base, other), theirs)
    if dtype == torch.float32:  # the chunking is what makes them equal here
        monkeypatch.setattr(slerp_module, "CHUNK_ELEMENTS", 1 << 40)
        assert not torch.equal(slerp_module.slerp(0.3, base, other),
                               merge_tensors([base, other], "slerp", parameters={"t": 0.3}, base_index=0))


SLERP_EDGES = {
    "parallel": (torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 4.0, 6.0]])),
    "antiparallel": (torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-3.0, 6.0, -1.5])),
    "nearly parallel": (torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1e-6])),
    "orthogonal": (torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])),
    "zero base": (torch.zeros(4, 3), randn(4, 3, seed=3)),
    "both zero": (torch.zeros(5), torch.zeros(5)),
    "tiny norms": (torch.full((6,), 1e-10), torch.full((6,), -2e-10)),
    "empty": (torch.zeros(0, 4), torch.zeros(0, 4)),
    "float16": (randn(8, 8, seed=4, dtype=torch.float16), randn(8, 8, seed=5, dtype=torch.float16)),
}


@pytest.mark.parametrize("case", SLERP_EDGES)
@pytest.mark.parametrize("t", [0.0, 0.35, 1.0])
def test_slerp_edge_cases_are_mergekits(case, t):
    base, other = SLERP_EDGES[case]
    theirs = merge_tensors([base, other], "slerp", parameters={"t": t}, base_index=0)
    same(studbook("slerp", base, [other], shared={"t": t}), theirs)


# -------------------------------------------------------------------------------- nuslerp

def nuslerp_case(name):
    a, b = randn(6, 5, seed=10), randn(6, 5, seed=11)
    if name == "colinear rows":  # some rows parallel, one antiparallel, one zero: mixed branches
        b[0], b[2], b[3], a[4] = 3 * a[0], -a[2], a[3], 0.0
    elif name == "identical":
        b = a.clone()
    elif name == "bfloat16":
        a, b = a.bfloat16(), b.bfloat16()
    elif name == "vector":
        a, b = a[0], b[0]
    elif name == "3-d":
        a, b = randn(3, 4, 5, seed=12), randn(3, 4, 5, seed=13)
    return a, b


NUSLERP_CASES = ["random", "colinear rows", "identical", "bfloat16", "vector", "3-d"]
NUSLERP_LAYOUTS = [{}, {"nuslerp_flatten": False}, {"nuslerp_flatten": False, "nuslerp_row_wise": True},
                   {"nuslerp_row_wise": True}]


@pytest.mark.parametrize("case", NUSLERP_CASES)
@pytest.mark.parametrize("layout", NUSLERP_LAYOUTS, ids=["flat", "rows", "columns", "flat-rowwise"])
@pytest.mark.parametrize("weights", [(0.6, 0.25), (1.0, -1.0), (0.0, 2.0)], ids=["w", "sum0", "t1"])
def test_nuslerp_is_mergekits(case, layout, weights):
    a, b = nuslerp_case(case)
    per_model = [{"weight": w} for w in weights]
    theirs = merge_tensors([a, b], "nuslerp", parameters={"weight": list(weights), **layout})
    same(studbook("nuslerp", None, [a, b], per_model, layout), theirs)
    base = (0.5 * (a.float() + b.float()) + 0.1 * randn(*a.shape, seed=14)).to(a.dtype)
    theirs = merge_tensors([base, a, b], "nuslerp", base_index=0,
                           parameters={"weight": list(weights), **layout})
    same(studbook("nuslerp", base, [a, b], per_model, layout), theirs)


# ----------------------------------------------------------------------------- multislerp

def test_multislerp_of_one_model_is_that_model_even_with_a_base():
    base, a = randn(4, 4, seed=20), randn(4, 4, seed=21)
    ours = studbook("multislerp", base, [a], [{"weight": 0.3}])
    same(ours, merge_tensors([base, a], "multislerp", base_index=0, parameters={"weight": [0.3]}))
    assert torch.equal(ours, a)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shared", [{}, {"normalize_weights": False}, {"eps": 1e-3}])
def test_multislerp_is_mergekits(dtype, shared):
    tensors = [randn(7, 3, 2, seed=22 + i, dtype=dtype) for i in range(4)]
    weights = [0.7, 0.4, 0.33, 0.1]
    per_model = [{"weight": w} for w in weights]
    theirs = merge_tensors(tensors, "multislerp", parameters={"weight": weights, **shared})
    same(studbook("multislerp", None, tensors, per_model, shared), theirs)
    base = randn(7, 3, 2, seed=30, dtype=dtype)
    theirs = merge_tensors([base, *tensors], "multislerp", base_index=0,
                           parameters={"weight": weights, **shared})
    same(studbook("multislerp", base, tensors, per_model, shared), theirs)


@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_of_two_antipodal_models_falls_back_to_linear(with_base):
    base = randn(3, 5, seed=31) if with_base else None
    a = randn(3, 5, seed=32)
    b = -a if base is None else 2 * base - a  # task vectors a - base and -(a - base)
    weights = [0.5, 0.5]
    inputs = ([base] if with_base else []) + [a, b]
    theirs = merge_tensors(inputs, "multislerp", base_index=0 if with_base else None,
                           parameters={"weight": weights})
    same(studbook("multislerp", base, [a, b], [{"weight": w} for w in weights]), theirs)


def test_multislerp_refuses_directions_that_cancel_like_mergekit():
    a = randn(3, 5, seed=33)
    tensors, weights = [a, -a, torch.zeros_like(a)], [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="zero"):
        merge_tensors(tensors, "multislerp", parameters={"weight": weights})
    with pytest.raises(Exception, match="zero"):
        studbook("multislerp", None, tensors, [{"weight": w} for w in weights])


# -------------------------------------------------------------------------------- karcher

def karcher_case(name, dtype):
    a, b, c = (randn(5, 4, seed=40 + i) for i in range(3))
    cases = {
        "random": [a, b, c],
        "two": [a, b],
        "one zero": [a, torch.zeros_like(a), b],  # left out of the direction, not the scale
        "all zero": [torch.zeros_like(a), torch.zeros_like(a)],  # no valid input: zeros
        "tiny norms": [torch.full_like(a, 1e-8), torch.full_like(a, -1e-8)],  # norm <= tol
        "antipodal": [a, -a],  # start mean of norm < tol: the first valid unit vector
        "identical": [a, a.clone(), 2 * a],  # every theta < tol: tangent 0, stop at once
        "one": [a],
        "one tiny": [torch.full_like(a, 1e-8), a, b],
    }
    return [t.to(dtype) for t in cases[name]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("case", ["random", "two", "one zero", "all zero", "tiny norms", "antipodal",
                                  "identical", "one", "one tiny"])
@pytest.mark.parametrize("shared", [{}, {"max_iter": 1}, {"max_iter": 0}, {"tol": 1e-2}, {"tol": 0.0}],
                         ids=["default", "iter1", "iter0", "tol-large", "tol0"])
def test_karcher_is_mergekits_including_early_exits(dtype, case, shared):
    tensors = karcher_case(case, dtype)
    theirs = merge_tensors(tensors, "karcher", parameters=shared)
    same(studbook("karcher", None, tensors, shared=shared), theirs)


def test_karcher_kernel_with_uneven_alphas_is_mergekits():
    from mergekit.merge_methods.karcher import karcher_merge_tensors

    from studbook.operators.merges.karcher import karcher_mean

    tensors = [randn(16, 8, seed=50 + i) for i in range(4)]
    alphas = [0.1, 0.2, 0.3, 0.4]
    same(karcher_mean(list(tensors), alphas, max_iter=20, tol=1e-7),
         karcher_merge_tensors(tensors, alphas, max_iter=20, tol=1e-7))


def test_the_spherical_merges_free_their_inputs():
    """A method may consume the `tensors` list: these drop each input once it is used."""
    a, b, c = (randn(4, 4, seed=60 + i) for i in range(3))
    base = randn(4, 4, seed=63)
    calls = [("slerp", base, [a], [{}], {"t": 0.5}),
             ("nuslerp", base, [a, b], [{"weight": 1.0}, {"weight": 2.0}], {}),
             ("nuslerp", None, [a, b], [{"weight": 1.0}, {"weight": 2.0}], {}),
             ("multislerp", base, [a, b, c], [{"weight": 1.0}] * 3, {}),
             ("karcher", None, [a, b, c], [{}] * 3, {})]
    for name, base_tensor, tensors, per_model, shared in calls:
        method = merges.get(name)
        method.merge(base_tensor, tensors, per_model, {**method.shared, **shared})
        assert all(t is None for t in tensors), name
