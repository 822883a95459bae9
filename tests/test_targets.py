"""Training to a target, and compounding: a child's compute-to-target vs from scratch.

Real pico models, the real stage bodies (breed, train, evaluate, gate, card) and real
lm-eval; the corpus and the target task's documents are written by the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stagehelp import run_stage
from studbook.operators.artifacts import load_artifact, read_meta
from studbook.core.errors import StudbookError
from studbook.repository.proposal import propose
from studbook.operators.targets import bits_per_byte, rolling_windows, task_texts
from studbook.operators.tokenizer import load_tokenizer


PICO = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}
TARGET_TASK = "stdlib_mining_bpb_tests"


@pytest.mark.parametrize("length,max_length", [(1, 8), (8, 8), (9, 8), (30, 8), (700, 128)])
def test_rolling_windows_score_every_token_once(length, max_length):
    ids = list(range(10, 10 + length))
    windows = rolling_windows(ids, prefix=0, max_length=max_length)
    scored = []
    for window, counted in windows:
        assert 2 <= len(window) <= max_length + 1
        scored += window[1:][len(window) - 1 - counted:]
    assert scored == ids
    assert windows[0][0][0] == 0  # the first window starts from the prefix token




def budget(name: str, steps: int, target: float | None = None, lr: float = 1e-2) -> None:
    data = {"steps": steps, "batch_size": 4, "lr": lr, "warmup_steps": 1, "log_every": 2}
    if target is not None:
        data["target"] = {"task": TARGET_TASK, "bits_per_byte": target, "every": 2}
    Path(f"conf/train/{name}.yaml").write_text(yaml.safe_dump(data))


def breed(name: str, method: str = "scratch", parents=(), **kwargs) -> None:
    choices = {**PICO, **kwargs.pop("choices", {})}
    propose(name, method, list(parents), kwargs.pop("seed", 0), choices, **kwargs)
    run_stage("breed", name)


def test_bits_per_byte_of_the_check_equals_lm_eval(studbook):
    from studbook.evidence.evaluation import evaluate_model
    from studbook.repository.recipes import EvaluationSpec

    budget("short", 6)
    breed("pico", choices={"train": "short"})
    result = evaluate_model("models/pico", [TARGET_TASK], "tasks", EvaluationSpec(batch_size=4), 128)
    lm_eval_value = result["results"][TARGET_TASK]["metrics"]["bits_per_byte"]
    model, tokenizer = load_artifact("models/pico"), load_tokenizer("models/pico")
    mine = bits_per_byte(model, tokenizer, task_texts(TARGET_TASK, "tasks"), 4, 128)
    assert mine == pytest.approx(lm_eval_value, rel=1e-5)
    assert 1.0 < mine < 9.0


@pytest.mark.slow  # four pico generations bred and evaluated (~110 s): the default run keeps under 10 min
def test_a_child_reaches_the_target_with_a_fraction_of_scratch_compute(studbook):
    budget("parent_budget", 40)
    breed("pico")  # 4 steps: a weak founder
    run_stage("evaluate", "pico"), run_stage("record", "pico")
    breed("parent", choices={"train": "parent_budget"}, seed=1)
    model, tokenizer = load_artifact("models/parent"), load_tokenizer("models/parent")
    start = bits_per_byte(model, tokenizer, task_texts(TARGET_TASK, "tasks"), 16, 128)
    target = round(start - 0.05, 4)
    budget("child_target", 30, target, lr=3e-3)
    budget("scratch_target", 80, target)

    breed("scratch-ref", choices={"train": "scratch_target"}, seed=2)
    breed("child", "finetune", ["parent"], choices={"train": "child_target"},
          compounding={"scratch": "scratch-ref"})
    child, scratch = read_meta("models/child"), read_meta("models/scratch-ref")
    for meta in (child, scratch):
        record = meta["compute"]["target"]
        assert record["task"] == TARGET_TASK and record["bits_per_byte"] == target
        assert [p["step"] for p in record["curve"]] == list(range(2, 2 * len(record["curve"]) + 1, 2))
        assert "seconds" not in meta["compute"]  # wall time stays out of the artifact
    record = child["compute"]["target"]
    assert record["reached"] and record["curve"][-1]["bits_per_byte"] <= target
    assert all(p["bits_per_byte"] > target for p in record["curve"][:-1])
    assert child["compute"]["steps"] == record["steps"] < 30  # it stopped there
    assert child["compute"]["tokens"] == record["tokens"] == record["steps"] * 4 * 128

    for name in ("parent", "scratch-ref", "child"):
        run_stage("evaluate", name)
        run_stage("record", name)
    run_stage("record", "child")
    card = json.loads(Path("cards/child.json").read_text())
    compounding = card["compounding"]
    scratch_tokens = (scratch["compute"]["target"]["tokens"] if scratch["compute"]["target"]["reached"]
                      else scratch["compute"]["tokens"])
    assert compounding["token_ratio"] == pytest.approx(record["tokens"] / scratch_tokens, abs=1e-6)
    assert compounding["bound"] == ("exact" if scratch["compute"]["target"]["reached"] else "at most")
    assert compounding["token_ratio"] < 1  # the parent's training is what the child saves
    text = Path("cards/child.md").read_text()
    assert f"reached at step {record['steps']}" in text
    assert f"{100 * compounding['token_ratio']:.1f} % of the tokens `scratch-ref` needed" in text
    # wall time is read from the generation's compute record, beside the recipe
    wall = json.loads(Path("generations/child/compute.json").read_text())
    assert card["compute"]["seconds"] == wall["seconds"] > 0
    print(f"compounding (pico): child {record['tokens']} tokens, scratch {scratch_tokens} tokens, "
          f"ratio {compounding['token_ratio']:.3f} ({compounding['bound']})")


def test_compounding_needs_a_scratch_reference_with_the_same_target(studbook):
    budget("t1", 4, 3.0)
    budget("t2", 4, 2.5)
    breed("pico")
    propose("ref", "scratch", [], 0, {**PICO, "train": "t2"})
    propose("tuned", "finetune", ["pico"], 0, {**PICO, "train": "t1"})
    cases = [
        ({"train": "t1"}, "ref", "does not train to the same target", "compounding.scratch"),
        ({"train": "t1"}, "tuned", "has parents", "compounding.scratch"),
        ({"train": "t1"}, "nobody", "does not exist", "compounding.scratch"),
        ({}, "ref", "has no target", "target"),
    ]
    for choices, reference, words, key in cases:
        with pytest.raises(StudbookError, match=words) as info:
            propose("c", "finetune", ["pico"], 0, {**PICO, **choices}, compounding={"scratch": reference})
        assert info.value.key == key
        assert not Path("generations/c").exists()  # a bad proposal leaves nothing


def test_a_target_on_items_the_generation_trains_on_is_refused(studbook):
    budget("t1", 4, 3.0)
    breed("pico")
    with pytest.raises(StudbookError, match="would also train on") as info:
        propose("c", "finetune", ["pico"], 0, {**PICO, "train": "t1", "data": "tests_niche"})
    assert info.value.key == "hard_examples" and info.value.file.endswith("conf/data/tests_niche.yaml")


def test_a_target_on_a_held_out_benchmark_is_refused(studbook):
    Path("conf/train/peek.yaml").write_text(yaml.safe_dump({
        "steps": 4, "batch_size": 4, "lr": 1e-2,
        "target": {"task": "stdlib_bpb_tests", "bits_per_byte": 3.0}}))
    with pytest.raises(StudbookError, match="must not see held-out items") as info:
        propose("peeker", "scratch", [], 0, {**PICO, "train": "peek"})
    assert info.value.key == "target.task" and info.value.file.endswith("conf/train/peek.yaml")
