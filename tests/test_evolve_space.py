"""Search spaces for `studbook evolve` (issue 14): validated at the edge, sampled by a real
Optuna study define-by-run, and each sampled point is an ordinary generation proposal."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import ROOT
from studbook.core.errors import StudbookError
from studbook.evolve.space import load_space, parameter_names, suggest

SHIPPED = ROOT / "conf/search/stdlib_niche.yaml"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def study(space, seed: int = 0):
    created = optuna.create_study(sampler=optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=space.sampler.startup_trials))
    for entry in space.enqueue:
        created.enqueue_trial(entry)
    return created


def test_the_shipped_space_names_its_parameters_as_paths():
    space = load_space(SHIPPED)
    assert parameter_names(space) == [
        "operator", "lora.data", "lora.parameters.rank", "lora.parameters.alpha", "finetune.data",
        "train.steps", "train.lr", "data.hard_examples", "data.replay"]


def test_a_tpe_study_samples_proposals_inside_the_space_operator_first():
    space = load_space(SHIPPED)
    search = study(space)
    proposals = []
    for number in range(12):
        trial = search.ask()
        proposal = suggest(trial, space, conf_dir=ROOT / "conf")
        search.tell(trial, float(number % 3))
        proposals.append(proposal)
    first = proposals[0]  # the enqueued trial, exactly
    assert (first.method, first.choices["data"], first.parameters["rank"], first.parameters["alpha"]) == \
        ("lora", "tests_niche", 16, 32.0)
    assert first.overrides == {"train": {"steps": 15, "lr": 0.002}, "data": {"hard_examples": 0.1, "replay": 0.2}}
    assert {p.method for p in proposals} == {"lora", "finetune"}
    for p in proposals:
        assert p.parents == ["founder"] and p.choices["contract"] == "stdlib_code"
        assert 8 <= p.overrides["train"]["steps"] <= 20 and 3e-4 <= p.overrides["train"]["lr"] <= 1e-2
        for key in ("hard_examples", "replay"):
            value = p.overrides["data"][key]
            assert 0 <= value <= 0.3 and round(value / 0.05, 9) == round(value / 0.05)
            assert len(repr(value)) <= 5  # a grid point, written as one
        if p.method == "lora":
            assert p.parameters["rank"] in range(4, 33, 4) and 8 <= p.parameters["alpha"] <= 64
            assert p.parameters["target_modules"] == "all-linear"
        else:  # a conditional space: the other operator's parameters are never asked
            assert p.parameters == {} and not any(k.startswith("lora.") for k in p.params)


def test_a_ledger_row_rebuilds_its_candidate():
    space = load_space(SHIPPED)
    search = study(space, seed=3)
    for _ in range(5):
        trial = search.ask()
        proposal = suggest(trial, space, conf_dir=ROOT / "conf")
        search.tell(trial, 0.0)
        again = suggest(optuna.trial.FixedTrial(proposal.params), space, conf_dir=ROOT / "conf")
        assert again == proposal


@pytest.mark.parametrize("edit,key,words", [
    (lambda d: d["train"].update(lr={"float": [1e-2, 1e-4]}), "train.lr", "is empty"),
    (lambda d: d["operators"].update(evolve_me={"parents": ["founder"]}), "operators.evolve_me",
     "unknown method 'evolve_me'"),
    (lambda d: d["operators"]["lora"].update(train="fast_and_loose"), "operators.lora.train",
     "no train option 'fast_and_loose'"),
    (lambda d: d["enqueue"][0].update({"lora.parameters.dropout": 0.1}), "enqueue[0].lora.parameters.dropout",
     "is not a parameter of this space"),
    (lambda d: d.update(temperature=2.0), "temperature", "unknown key"),
    (lambda d: d["data"].update(replay={"float": [0.0, 0.3], "log": True}), "data.replay",
     "a log range starts above 0"),
], ids=["empty-range", "unknown-operator", "unknown-option", "enqueue-unknown", "unknown-key", "log-at-zero"])
def test_a_bad_space_is_refused_naming_file_and_key(tmp_path, edit, key, words):
    folder = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", folder)
    file = folder / "search/stdlib_niche.yaml"
    data = yaml.safe_load(file.read_text())
    edit(data)
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(StudbookError) as info:
        load_space(file)
    assert info.value.file == str(file)
    assert info.value.key == key and words in str(info.value), str(info.value)


def test_a_sampled_candidate_is_an_ordinary_generation(skeleton):
    """A proposal goes through `propose` unchanged: the recipe composes and validates, and
    the sampled values are what the generation will be bred with."""
    from studbook.repository.generation import load_generation
    from studbook.repository.proposal import propose

    propose("p1", "scratch", [], 1, {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico",
                                      "data": "stdlib_all"})
    Path("conf/search/pico.yaml").write_text(yaml.safe_dump({
        "description": "pico LoRA children", "contract": "stdlib_pico",
        "operators": {"lora": {"parents": ["p1"], "train": "pico", "data": "stdlib_all",
                               "parameters": {"rank": {"int": [2, 4]}}}},
        "train": {"lr": {"float": [1e-3, 1e-2], "log": True}},
        "budget": {"candidates": 1, "wall_seconds": 60, "candidate_seconds": 60}}))
    space = load_space("conf/search/pico.yaml")
    proposal = suggest(optuna.trial.FixedTrial({"operator": "lora", "lora.parameters.rank": 3, "train.lr": 4e-3}),
                       space)
    propose("cand-000", proposal.method, proposal.parents, space.seed, proposal.choices,
            parameters=proposal.parameters, overrides=proposal.overrides)
    resolved = load_generation("cand-000")
    assert resolved.recipe.train.lr == 4e-3 and resolved.parameters.rank == 3
    assert resolved.recipe.model.architecture == "llama" and resolved.recipe.parents == ["p1"]
