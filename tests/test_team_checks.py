"""Bad input from a team's set-up is refused before compute, naming file and key.

A device that is not there, a child whose model is not its parent's, a student outside its
teacher's family, LoRA on an architecture PEFT has no default targets for, a data group
whose corpus nobody writes, a tokenizer without an end-of-text token: `studbook check`
(and the breed stage, which runs the same checks) stops with file and key, writing nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import run
from pico import team_model
from stagehelp import run_stage
from test_team_models import team_contract

PY = sys.executable


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Path:
    """A skeleton with a bred pico Qwen2 import and a pico Phi-3 import."""
    from conftest import copy_skeleton

    base = tmp_path_factory.mktemp("checks")
    repo = copy_skeleton(base / "studbook")
    team_contract(repo)
    for arch, kind in (("qwen2", "bpe"), ("phi3", "unigram")):
        source = team_model(base / arch, arch, kind)
        run([PY, "-m", "studbook.cli", "propose", arch, "--from", str(source), "--contract", "team_pico"], repo)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        for arch in ("qwen2", "phi3"):
            run_stage("breed", arch)
    finally:
        os.chdir(cwd)
    return repo


def studbook(repo: Path, *args: str, env: dict | None = None):
    previous = dict(os.environ)
    os.environ.update(env or {})
    try:
        return run([PY, "-m", "studbook.cli", *args], repo, check=False)
    finally:
        os.environ.clear()
        os.environ.update(previous)


def refused(result, file: str | None, key: str) -> str:
    assert result.returncode != 0, result.stdout
    message = result.stderr + result.stdout
    assert "Traceback" not in message
    if file:
        assert file in message, message
    assert key in message, message
    return message


def test_a_device_that_is_not_there(team):
    message = refused(studbook(team, "check", "qwen2", env={"STUDBOOK_DEVICE": "cuda:1"}), None,
                      "STUDBOOK_DEVICE")
    assert "CUDA device(s)" in message
    refused(studbook(team, "check", "qwen2", env={"STUDBOOK_DEVICE": "tpu"}), None, "STUDBOOK_DEVICE")


def test_a_child_whose_model_is_not_its_parents(team):
    message = refused(studbook(team, "propose", "child", "--method", "finetune", "--parents", "qwen2",
                               "--model", "llama_pico", "--contract", "team_pico", "--train", "pico",
                               "--data", "stdlib_all"), "generations/child/recipe.yaml", "model.architecture")
    assert "qwen2" in message
    assert not (team / "generations/child").exists()  # nothing written


def test_a_student_outside_its_teachers_family(team):
    refused(studbook(team, "propose", "student", "--method", "distill", "--parents", "qwen2",
                     "--model", "llama_pico", "--contract", "team_pico", "--train", "pico",
                     "--data", "stdlib_all"), "generations/student/recipe.yaml", "model.architecture")
    assert not (team / "generations/student").exists()


def test_lora_where_peft_has_no_default_targets(team):
    run([PY, "-m", "studbook.cli", "propose", "phi-lora", "--method", "lora", "--parents", "phi3",
         "--contract", "team_pico", "--train", "pico", "--data", "stdlib_all"], team)
    message = refused(studbook(team, "check", "phi-lora"), "generations/phi-lora/recipe.yaml",
                      "parameters.target_modules")
    assert "phi3" in message


def test_a_data_group_whose_corpus_nobody_writes(team):
    (team / "conf/data/elsewhere.yaml").write_text("corpus: data/corpora/nowhere\nsplit: train\n")
    run([PY, "-m", "studbook.cli", "propose", "lost", "--method", "finetune", "--parents", "qwen2",
         "--contract", "team_pico", "--train", "pico", "--data", "elsewhere"], team)
    message = refused(studbook(team, "check", "lost"), "conf/data/elsewhere.yaml", "corpus")
    assert "data/corpus" in message  # what the corpora do write


def test_a_tokenizer_without_end_of_text():
    """Packing needs the end-of-text token between documents; without one: refused, named."""
    from transformers import PreTrainedTokenizerFast

    from pico import stdlib_sample, train_tokenizer
    from studbook.core.errors import StudbookError
    from studbook.operators.packing import pack

    core = train_tokenizer("bpe", stdlib_sample(5))._tokenizer
    mute = PreTrainedTokenizerFast(tokenizer_object=core)  # no special tokens declared
    with pytest.raises(StudbookError) as raised:
        pack(["x = 1\n"], mute, file="models/mute/tokenizer_config.json")
    assert raised.value.file == "models/mute/tokenizer_config.json"
    assert "end-of-text" in str(raised.value) and raised.value.key == "tokenizer"
