"""Selection vs confirmation: a search's winner is graded on items it was not picked on,
and must beat the noise of re-breeding its parent (evidence/selection.py)."""

import json

import numpy as np
import pytest

from studbook.core.errors import StudbookError
from studbook.evidence.gate import Scores, decide
from studbook.evidence.selection import (Scope, confirm, read_scope, read_selection, scoped_contract, split,
                                         verdict, SelectionRecord)
from studbook.repository.recipes import HarvestSpec

from test_gate import CONTRACT as GATE_CONTRACT

CONTRACT = GATE_CONTRACT.model_copy(update={"harvest": HarvestSpec(tasks=["mine"])})
IDS = [f"b{i:02d}" for i in range(48)]
SCOPE = Scope(search="s1", salt="s1", items_per_task=8, tasks=["bpb"], evaluate="all")


def scores(name, bpb: dict[str, float], acc=(1,) * 10):
    return Scores(name, None, {
        "bpb": {i: {"bits_per_byte": v, "bytes": 100} for i, v in bpb.items()},
        "mc": {f"m{i}": {"acc": v, "choices": 4} for i, v in enumerate(acc)}})


def record(noise: dict[str, float], parent="p", finalists=1, of="parent") -> SelectionRecord:
    return SelectionRecord(search="s1", trial=3, candidates=8, finalists=finalists, rank=1,
                           sampler="tpe, seed 0", noise={
                               "of": of, "parent": parent, "parent_sha256": "a" * 64, "seed": 1235,
                               "experiment": "b" * 40, "weights_sha256": "c" * 64,
                               "scores": {"bpb": noise}})


def test_the_split_is_deterministic_disjoint_exact_and_salted():
    chosen, held = split("bpb", IDS, "s1", 8)
    assert len(chosen) == 8 and len(held) == 40 and not set(chosen) & set(held)
    assert set(chosen) | set(held) == set(IDS)
    assert split("bpb", list(reversed(IDS)), "s1", 8)[0] == list(reversed(chosen))  # order-free
    assert split("bpb", IDS, "s1", 8) == (chosen, held)
    assert split("bpb", IDS, "s2", 8)[0] != chosen  # another search, other items
    assert split("other", IDS, "s1", 8)[0] != chosen  # another task, other items


def test_a_candidate_that_wins_only_on_its_selection_items_is_not_promoted():
    rng = np.random.default_rng(0)
    base = {i: float(v) for i, v in zip(IDS, rng.normal(3.0, 0.3, size=48))}
    chosen, held = split("bpb", IDS, "s1", 8)
    # 0.3 bits per byte better on the items it was selected on, slightly worse on the rest
    child_bpb = {i: base[i] - 0.3 if i in chosen else base[i] + 0.01 for i in IDS}
    parent, child = scores("p", base), scores("c", child_bpb)
    on_selection = decide(
        Scores("c", None, {"bpb": {i: child.items["bpb"][i] for i in chosen}}), [parent],
        scoped_contract(CONTRACT, ["bpb"]))
    assert on_selection["verdict"] == "promoted"
    assert on_selection["primary"]["net_gain"]["mean"] == pytest.approx(0.3)
    decided = confirm(child, [parent], CONTRACT, SCOPE, record(base))
    assert decided["verdict"] == "rejected"
    assert "not shown" in decided["reasons"][0]
    block = decided["selection"]
    assert block["selection"]["verdict"] == "promoted" and block["selection"]["n_items"] == 8
    assert block["confirmation"]["n_items"] == 40
    assert block["confirmation"]["mean"] == pytest.approx(-0.01)
    assert block["noise"]["floor"] == 0.0  # the noise run re-bred the parent bit for bit


def test_a_confirmed_gain_below_the_noise_floor_is_rejected_and_above_it_promoted():
    base = {i: 3.0 + 0.01 * (k % 7) for k, i in enumerate(IDS)}
    child = scores("c", {i: v - 0.05 for i, v in base.items()})
    parent = scores("p", base)
    noisy = {i: v - 0.08 for i, v in base.items()}  # the re-bred parent alone gains 0.08
    decided = confirm(child, [parent], CONTRACT, SCOPE, record(noisy))
    assert decided["verdict"] == "rejected"
    assert decided["reasons"] == ["confirmed gain 0.0500 does not exceed the noise floor 0.0800 "
                                  "(p re-bred with seed 1235)"]
    quiet = {i: v + 0.02 for i, v in base.items()}  # worse by 0.02: the floor is |mean|
    decided = confirm(child, [parent], CONTRACT, SCOPE, record(quiet, finalists=3))
    assert decided["verdict"] == "promoted"
    assert decided["selection"]["noise"]["floor"] == pytest.approx(0.02)
    assert decided["selection"]["confirmation"]["confidence"] == pytest.approx(1 - 0.05 / 3)
    assert decided["reasons"][-1] == "above the noise floor 0.0200"
    # the card's benchmark deltas are on all items, as the child's lm-eval figures are
    assert decided["parent_benchmarks"]["p"]["bpb"] == pytest.approx(np.mean(list(base.values())))


def test_a_finalist_twin_measures_how_far_the_finalists_own_gain_moves_with_the_seed(tmp_path):
    """noise.rerun: finalist. The floor is |mean(twin − finalist)| on the confirmation items,
    whatever the parent's own seed-to-seed spread: the parent's weights are the same for
    both, so the parent cancels out of the paired gain."""
    base = {i: 3.0 + 0.01 * (k % 7) for k, i in enumerate(IDS)}
    finalist = {i: v - 0.05 for i, v in base.items()}
    child, parent = scores("c", finalist), scores("p", base)
    twin = {i: v + 0.004 for i, v in finalist.items()}  # the same recipe, seed + 1: 0.004 less gain
    decided = confirm(child, [parent], CONTRACT, SCOPE, record(twin, of="finalist"))
    assert decided["verdict"] == "promoted"
    noise = decided["selection"]["noise"]
    assert noise["of"] == "finalist" and noise["rebred"] == "c" and noise["parent"] == "p"
    assert noise["floor"] == pytest.approx(0.004) and noise["n_items"] == 40
    assert decided["reasons"][-1] == "above the noise floor 0.0040"
    wild = {i: v - 0.07 for i, v in finalist.items()}  # seed alone moves the gain by more than it
    decided = confirm(child, [parent], CONTRACT, SCOPE, record(wild, of="finalist"))
    assert decided["verdict"] == "rejected"
    assert decided["reasons"] == ["confirmed gain 0.0500 does not exceed the noise floor 0.0700 "
                                  "(c re-bred with seed 1235)"]
    (tmp_path / "generations" / "c").mkdir(parents=True)
    (tmp_path / "generations" / "c" / "selection.json").write_text(
        '{"search": "s1", "trial": 0, "candidates": 1, "finalists": 1, "rank": 1, "sampler": "tpe", "noise": '
        '{"of": "sibling", "parent": "p", "parent_sha256": "a", "seed": 1, "experiment": "b", '
        '"weights_sha256": "c", "scores": {}}}')
    with pytest.raises(StudbookError, match="noise.of"):
        read_selection("c", tmp_path)


def test_a_noise_run_of_a_non_parent_or_without_confirmation_scores_is_refused():
    base = {i: 3.0 for i in IDS}
    child, parent = scores("c", base), scores("p", base)
    with pytest.raises(ValueError, match="not a parent"):
        confirm(child, [parent], CONTRACT, SCOPE, record(base, parent="q"))
    with pytest.raises(ValueError, match="no score on 40 confirmation item"):
        confirm(child, [parent], CONTRACT, SCOPE, record({}))


def test_scope_files_are_read_strictly_and_gate_a_candidate_on_its_split_tasks(tmp_path):
    folder = tmp_path / "generations" / "c"
    folder.mkdir(parents=True)
    (folder / "scope.yaml").write_text("search: s1\nsalt: s1\nitems_per_task: 8\ntasks: [bpb]\n"
                                       "evaluate: selection\n")
    scope = read_scope("c", tmp_path)
    assert scope.evaluate == "selection"
    chosen, _ = split("bpb", IDS, "s1", 8)
    child = Scores("c", None, {"bpb": {i: {"bits_per_byte": 2.0, "bytes": 10} for i in chosen}})
    parent = scores("p", {i: 3.0 for i in IDS})
    decided = verdict("c", child, [parent], CONTRACT, tmp_path)
    assert decided["verdict"] == "promoted" and decided["guards"] == []
    assert decided["selection"] == {"search": "s1", "stage": "selection", "tasks": ["bpb"],
                                    "items_per_task": 8}
    assert decided["primary"]["net_gain"]["n_items"] == 8
    assert scoped_contract(CONTRACT, ["bpb"]).harvest is None
    (folder / "scope.yaml").write_text("search: s1\nsalt: s1\nitems_per_task: 0\ntasks: [bpb]\n"
                                       "evaluate: selection\n")
    with pytest.raises(StudbookError) as error:
        read_scope("c", tmp_path)
    assert error.value.key == "items_per_task" and "scope.yaml" in error.value.file
    (folder / "scope.yaml").write_text("search: s1\nsalt: s1\nitems_per_task: 8\ntasks: [bpb]\n"
                                       "evaluate: all\n")
    with pytest.raises(StudbookError, match="no selection record"):
        verdict("c", child, [parent], CONTRACT, tmp_path)
    (folder / "selection.json").write_text(json.dumps({"search": "s1"}))
    with pytest.raises(StudbookError) as error:
        verdict("c", child, [parent], CONTRACT, tmp_path)
    assert "selection.json" in error.value.file
