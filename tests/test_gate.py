import numpy as np
import pytest

from studbook.evidence.gate import UNIFORM, Scores, decide, paired_bootstrap, uniform_scores
from studbook.repository.recipes import Contract

CONTRACT = Contract.model_validate({
    "description": "test",
    "benchmarks": [{"task": "bpb", "metric": "bits_per_byte", "niche": "n"},
                   {"task": "mc", "metric": "acc", "niche": "n"}],
    "primary": {"metric": "bits_per_byte", "direction": "lower", "tasks": ["bpb"]},
    "guarded": [{"task": "mc", "metric": "acc", "direction": "higher", "tolerance": 0.1}],
    "compatibility": {"architectures": ["llama"], "max_parameters": 10},
    "gate": {"bootstrap_samples": 1000, "seed": 0},
})


def scores(name, bpb, acc):
    return Scores(name, None, {
        "bpb": {f"b{i}": {"bits_per_byte": v, "bytes": 100} for i, v in enumerate(bpb)},
        "mc": {f"m{i}": {"acc": v, "choices": 4} for i, v in enumerate(acc)},
    })


def test_bootstrap_interval_brackets_the_mean():
    gain = np.random.default_rng(1).normal(0.3, 1.0, size=400)
    stats = paired_bootstrap(gain, 2000, 0.95, 0)
    assert stats["ci_low"] < stats["mean"] < stats["ci_high"]
    assert stats["mean"] == pytest.approx(gain.mean())
    # a 95% interval of a mean of 400 unit-variance items is about +-0.098 wide
    assert 0.15 < stats["ci_high"] - stats["ci_low"] < 0.25
    assert stats["p_value"] < 0.01


def test_founder_against_uniform_reference():
    child = scores("child", [5.0, 6.0, 5.5, 6.5], [1, 0, 1, 0])
    verdict = decide(child, [], CONTRACT)
    assert verdict["verdict"] == "promoted"
    assert verdict["reference_parent"] == UNIFORM
    assert verdict["primary"]["parents"][UNIFORM] == 8.0
    assert verdict["primary"]["net_gain"]["mean"] == pytest.approx(8.0 - 5.75)
    assert verdict["guards"][0]["parent"] == pytest.approx(0.25)
    assert uniform_scores(child).items["mc"]["m0"]["acc"] == 0.25
    assert verdict["parent_benchmarks"] == {UNIFORM: {"bpb": 8.0, "mc": 0.25}}


def test_noise_is_not_a_gain():
    rng = np.random.default_rng(0)
    parent_bpb = rng.normal(3.0, 0.5, size=60)
    parent = scores("p", parent_bpb, [1] * 10)
    child = scores("c", parent_bpb + rng.normal(0, 0.2, size=60), [1] * 10)
    assert decide(child, [parent], CONTRACT)["verdict"] == "rejected"


def test_gain_against_best_parent_and_guard():
    weak = scores("weak", [4.0] * 20, [1] * 10)
    strong = scores("strong", [3.0] * 20, [1] * 10)
    better = scores("child", [2.9] * 20, [1] * 10)
    verdict = decide(better, [weak, strong], CONTRACT)
    assert verdict["reference_parent"] == "strong"
    assert verdict["verdict"] == "promoted"
    assert verdict["primary"]["net_gain"]["mean"] == pytest.approx(0.1)
    assert verdict["parent_benchmarks"]["weak"] == {"bpb": 4.0, "mc": 1.0}
    weak, strong = scores("weak", [4.0] * 20, [1] * 100), scores("strong", [3.0] * 20, [1] * 100)
    regressed = scores("child", [2.9] * 20, [1] * 75 + [0] * 25)  # acc 1.0 -> 0.75
    verdict = decide(regressed, [weak, strong], CONTRACT)
    assert verdict["verdict"] == "rejected"
    guard = verdict["guards"][0]
    assert not guard["ok"] and guard["change"] == pytest.approx(-0.25)
    assert guard["change_ci_high"] < -0.1
    assert any("regressed by 0.2500" in r for r in verdict["reasons"])
    # a dip within noise (2 of 10 items) is not shown to exceed the tolerance
    dipped = scores("child", [2.9] * 20, [1] * 8 + [0] * 2)
    few = [scores("weak", [4.0] * 20, [1] * 10), scores("strong", [3.0] * 20, [1] * 10)]
    assert decide(dipped, few, CONTRACT)["verdict"] == "promoted"


def test_parent_figures_aggregate_like_lm_eval():
    """bits per byte of a task is byte-weighted (lm-eval's corpus-level aggregate)."""
    def sized(name, values, sizes):
        return Scores(name, None, {
            "bpb": {f"b{i}": {"bits_per_byte": v, "bytes": n} for i, (v, n) in enumerate(zip(values, sizes))},
            "mc": {"m0": {"acc": 1.0, "choices": 4}}})
    child = sized("child", [1.0, 1.0], [100, 300])
    parent = sized("parent", [2.0, 4.0], [100, 300])
    verdict = decide(child, [parent], CONTRACT)
    assert verdict["parent_benchmarks"]["parent"]["bpb"] == pytest.approx(3.5)  # not the plain mean 3.0
    assert verdict["primary"]["parents"]["parent"] == pytest.approx(3.0)  # the gate itself: per item
