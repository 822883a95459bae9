"""The sparsifiers of the task-vector merges (DARE, DELLA, Model Breadcrumbs, TIES's trim),
on plain tensors: by their definition, and operation for operation against mergekit 0.1.5's
`mergekit.sparsify` and `merge_tensors` (the recipe rows of test_merges.py do the same on
whole models). Random ones run under a fixed torch seed, as a merge seeds once.
"""

from __future__ import annotations

import pytest
import torch

from studbook.operators import merges
from studbook.operators.merges._task_vectors import (bernoulli_prune, della_magprune,
                                                     magnitude_outliers, magnitude_prune)

GTA = ["task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
       "della", "della_linear"]
SPARSIFIER = {"ties": "magnitude", "dare_ties": "random", "dare_linear": "random",
              "breadcrumbs": "magnitude_outliers", "breadcrumbs_ties": "magnitude_outliers",
              "della": "della_magprune", "della_linear": "della_magprune"}


def task_vector(shape=(128, 96), seed=0, dtype=torch.float32, steps: int = 0):
    """child - base, on the base's floating-point grid (in bfloat16 many magnitudes tie
    exactly); with `steps`, on a grid of that many values, so that ties are everywhere."""
    generator = torch.Generator().manual_seed(seed)
    if steps:
        return (torch.randint(-steps, steps + 1, shape, generator=generator) / 1024).to(dtype)
    base = (0.02 * torch.randn(shape, generator=generator)).to(dtype)
    child = base + (0.02 * torch.randn(shape, generator=generator)).to(dtype)
    return child - base


def seeded(fn, *args, seed=7, **kwargs):
    torch.manual_seed(seed)
    return fn(*args, **kwargs)


def l1(tensor) -> float:
    return float(tensor.double().abs().sum())


# ---- by definition ----------------------------------------------------------------------

@pytest.mark.parametrize("density", [0.3, 0.7])
@pytest.mark.parametrize("prune", ["dare", "della"])
def test_kept_fraction_is_the_density(prune, density):
    delta = task_vector((256, 256))
    assert (delta != 0).all()
    pruned = (seeded(bernoulli_prune, delta, density) if prune == "dare"
              else seeded(della_magprune, delta, density, 0.15))
    kept = float((pruned != 0).float().mean())
    assert abs(kept - density) < 0.01  # 65,536 draws: the standard error is ~0.002
    if prune == "della":  # and larger magnitudes are kept more often, per row
        order = delta.abs().argsort(dim=1)
        ranked = (pruned != 0).gather(1, order).float()
        low, high = ranked[:, :64].mean(), ranked[:, -64:].mean()
        assert high - low > 0.2  # expected (density + 0.11) - (density - 0.11)


@pytest.mark.parametrize("prune", ["magnitude", "outliers", "dare", "della"])
def test_rescale_keeps_the_l1_norm_and_is_otherwise_the_mask(prune):
    delta = task_vector()
    call = {"magnitude": lambda d, r: magnitude_prune(d, 0.4, rescale=r),
            "outliers": lambda d, r: magnitude_outliers(d, 0.4, 0.05, rescale=r),
            "dare": lambda d, r: seeded(bernoulli_prune, d, 0.4, rescale=r),
            "della": lambda d, r: seeded(della_magprune, d, 0.4, 0.15, rescale=r)}[prune]
    masked, rescaled = call(delta, False), call(delta, True)
    assert abs(l1(rescaled) - l1(delta)) <= 1e-6 * l1(delta)
    assert torch.equal(masked != 0, rescaled != 0)  # same draws, same mask
    ratio = rescaled[masked != 0] / masked[masked != 0]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio))  # one factor: the L1 ratio, not 1/p
    torch.testing.assert_close(ratio[0].double(), torch.tensor(l1(delta) / l1(masked)).double())
    assert l1(masked) < 0.99 * l1(delta)  # rescale=False leaves the pruned norm


def test_rescale_is_skipped_below_the_epsilon():
    tiny = torch.full((64,), 1e-10)
    assert torch.equal(seeded(bernoulli_prune, tiny, 0.5, rescale=True),
                       seeded(bernoulli_prune, tiny, 0.5, rescale=False))


@pytest.mark.parametrize("prune", ["dare", "della"])
def test_another_seed_draws_another_mask_and_the_same_seed_the_same(prune):
    delta = task_vector()
    call = ((lambda seed: seeded(bernoulli_prune, delta, 0.5, seed=seed)) if prune == "dare"
            else (lambda seed: seeded(della_magprune, delta, 0.5, 0.15, seed=seed)))
    assert torch.equal(call(7), call(7))
    assert not torch.equal(call(7), call(8))


@pytest.mark.parametrize("prune", ["dare", "della"])
def test_density_one_returns_the_input_without_a_draw(prune):
    delta = task_vector((16, 16))
    torch.manual_seed(3)
    state = torch.get_rng_state()
    out = bernoulli_prune(delta, 1.0) if prune == "dare" else della_magprune(delta, 1.0, 0.15)
    assert out is delta and torch.equal(torch.get_rng_state(), state)
    bernoulli_prune(delta, 0.5)
    assert not torch.equal(torch.get_rng_state(), state)  # below 1 it draws


@pytest.mark.parametrize("density,gamma", [(0.5, 0.05), (0.3, 0.1), (0.9, 0.2), (0.02, 0.0)])
def test_magnitude_outliers_drops_the_largest_gamma_and_keeps_density(density, gamma):
    count = 4096
    values = torch.randperm(count, generator=torch.Generator().manual_seed(1)).float() + 1
    delta = (values * (-1) ** torch.arange(count)).reshape(64, 64)  # distinct magnitudes
    kept = magnitude_outliers(delta, density, gamma) != 0
    target, top = int(density * count), int(gamma * count)
    assert int(kept.sum()) == target
    rank = delta.abs().reshape(-1).argsort().argsort().reshape(delta.shape)  # 0 = smallest
    if target + top <= count:  # the int(gamma n) largest go, and the smallest below the kept
        assert torch.equal(kept, (rank >= count - top - target) & (rank < count - top))
    else:  # both do not fit: fewer outliers are dropped, the smallest `target` stay
        assert torch.equal(kept, rank < target)


def test_magnitude_outliers_sorts_only_when_ties_straddle_a_cut(monkeypatch):
    from mergekit.sparsify import magnitude_outliers as theirs

    sorts = []
    sort = torch.sort
    monkeypatch.setattr(torch, "sort", lambda *a, **k: sorts.append(1) or sort(*a, **k))
    distinct = torch.arange(1, 1001, dtype=torch.float32) * (-1) ** torch.arange(1000)
    # ascending .5 1 1 2 2 2 2 3 4 4: ties straddle the lower cut (0.3, 0.5), the upper (0.2),
    # or neither (0.7 keeps the four 2s and up)
    straddling = torch.tensor([3.0, -1.0, 2.0, -2.0, 2.0, 0.5, -2.0, 1.0, 4.0, -4.0])
    for delta, density, gamma, expected_sorts in [(distinct, 0.5, 0.1, 0), (distinct, 0.0, 0.1, 0),
                                                   (straddling, 0.3, 0.1, 1), (straddling, 0.5, 0.1, 1),
                                                   (straddling, 0.2, 0.1, 1), (straddling, 0.7, 0.0, 0)]:
        sorts.clear()
        ours = magnitude_outliers(delta, density, gamma)
        assert len(sorts) == expected_sorts, (delta.numel(), density, gamma)
        assert torch.equal(ours, theirs(delta, density, None, gamma))


@pytest.mark.parametrize("density,epsilon", [(0.9, 0.15), (0.1, 0.15), (0.5, 0.5), (0.15, 0.15)])
def test_della_refuses_probabilities_outside_zero_one(density, epsilon):
    with pytest.raises(ValueError, match=r"density .* epsilon .* must stay inside \(0, 1\)"):
        della_magprune(task_vector((8, 8)), density, epsilon)
    method = merges.get("della")  # the merge refuses before drawing anything
    base = torch.zeros(8, 8)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with pytest.raises(ValueError, match="epsilon"):
        method.merge(base, [base + 1, base - 1], [{"weight": 1.0, "density": 0.5, "epsilon": 0.1},
                                                  {"weight": 1.0, "density": density, "epsilon": epsilon}],
                     dict(method.shared))
    assert torch.equal(torch.get_rng_state(), state)


def test_della_says_why_rows_of_one_entry_cannot_be_ranked():
    with pytest.raises(ValueError, match="rows of one entry"):
        della_magprune(torch.randn(8, 1), 0.5, 0.1)


# ---- against mergekit -------------------------------------------------------------------

@pytest.mark.parametrize("steps", [0, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(48, 40), (1920,), (3, 8, 40)])
def test_sparsifiers_are_mergekits_on_exact_ties(dtype, shape, steps):
    from mergekit import sparsify as mk
    from mergekit.sparsify import RescaleNorm

    delta = task_vector(shape, dtype=dtype, steps=steps)
    if steps or dtype == torch.bfloat16:
        assert delta.abs().unique().numel() < delta.numel() / 2  # ties at every cut
    for rescale in (False, True):
        norm = RescaleNorm.l1 if rescale else None
        for density in (0.3, 0.55):
            pairs = {
                "magnitude": (lambda d: magnitude_prune(d, density, rescale=rescale),
                              lambda d: mk.magnitude(d, density, norm)),
                "magnitude_outliers": (lambda d: magnitude_outliers(d, density, 0.05, rescale=rescale),
                                       lambda d: mk.magnitude_outliers(d, density, norm, 0.05)),
                "bernoulli": (lambda d: seeded(bernoulli_prune, d, density, rescale=rescale),
                              lambda d: seeded(mk.bernoulli, d, density, norm)),
                "della_magprune": (lambda d: seeded(della_magprune, d, density, 0.1, rescale=rescale),
                                   lambda d: seeded(mk.della_magprune, d, density, 0.1, norm)),
            }
            for name, (ours, theirs) in pairs.items():
                expected = theirs(delta)
                for inplace in (False, True):
                    copy = delta.clone()
                    got = (ours(copy) if not inplace else
                           {"magnitude": lambda d: magnitude_prune(d, density, True, rescale),
                            "magnitude_outliers": lambda d: magnitude_outliers(d, density, 0.05, True, rescale),
                            "bernoulli": lambda d: seeded(bernoulli_prune, d, density, True, rescale),
                            "della_magprune": lambda d: seeded(della_magprune, d, density, 0.1, True, rescale),
                            }[name](copy))
                    where = (name, dtype, shape, rescale, density, inplace)
                    assert got.dtype == expected.dtype and got.shape == expected.shape, where
                    assert torch.equal(got, expected), where
                    if not inplace:
                        assert torch.equal(copy, delta), where  # the input is left alone


def _mergekit_gta(method, base, models, per_model, shared):
    from mergekit.merge_methods.api import merge_tensors

    parameters = dict(shared)
    for key in per_model[0]:
        parameters[key] = {index + 1: params[key] for index, params in enumerate(per_model)}
    return merge_tensors([base, *models], method, parameters=parameters, base_index=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", GTA)
def test_whole_merge_is_mergekits_merge_tensors(method, dtype):
    entry = merges.get(method)
    generator = torch.Generator().manual_seed(11)
    base = (0.02 * torch.randn(48, 40, generator=generator)).to(dtype)
    models = [base + (0.02 * torch.randn(base.shape, generator=generator)).to(dtype) for _ in range(3)]
    extra = {"breadcrumbs": {"gamma": 0.05}, "breadcrumbs_ties": {"gamma": 0.05},
             "della": {"epsilon": 0.1}, "della_linear": {"epsilon": 0.1}}.get(method, {})
    per_model = [{"weight": w, "density": d, **extra} for w, d in [(0.7, 0.5), (0.4, 1.0), (0.5, 0.3)]]
    for shared in (dict(entry.shared), {**entry.shared, "normalize": not entry.shared["normalize"],
                                        "rescale": not entry.shared["rescale"], "lambda": 0.9,
                                        "int8_mask": True}):
        torch.manual_seed(5)
        ours = entry.merge(base, list(models), [dict(p) for p in per_model], shared)
        after_ours = torch.get_rng_state()
        torch.manual_seed(5)
        theirs = _mergekit_gta(method, base, models, per_model, shared)
        assert ours.dtype == theirs.dtype == dtype
        assert torch.equal(ours, theirs), (method, dtype, shared)
        assert torch.equal(torch.get_rng_state(), after_ours)  # the same number of draws
        assert not torch.equal(ours, base)


@pytest.mark.parametrize("method", GTA)
def test_parameters_and_defaults_are_mergekits(method):
    from mergekit import merge_methods

    spec = merge_methods.get(method).spec
    per_model = {p.name: None if p.required else p.default
                 for p in spec.parameters if p.scope.name == "NON_BASE"}
    shared = {p.name: None if p.required else p.default
              for p in spec.parameters if p.scope.name == "SHARED"}
    ours = merges.get(method)
    assert ours.per_model == per_model and ours.shared == shared
    assert ours.needs_base and spec.contract.base.name == "REQUIRED"
    assert ours.deterministic == (SPARSIFIER.get(method) not in ("random", "della_magprune"))
    assert ours.reference == spec.reference_url
