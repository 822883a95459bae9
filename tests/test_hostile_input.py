"""Bad input that used to fail late (issue 13): each is now refused before compute by the
checks `studbook check` and the breed stage share, naming file and key, changing nothing.

Imports are bounded by the contract (size, parameters from every safetensors header,
vocabulary) and carry no remote code anywhere in their JSON; merges refuse parameters
that would breed NaN; models that transformers cannot build are named with their file;
a disk that fills up mid-training ends in one line, not a traceback.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pico import team_model
from stagehelp import run_stage
from studbook.core.errors import StudbookError
from studbook.repository.generation import load_generation
from studbook.repository.proposal import propose, propose_import
from test_team_models import team_contract

PICO = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}
TEAM = {"contract": "team_pico", "model": "llama_pico", "train": "none", "data": "stdlib_all"}


def files_and_bytes() -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in Path(".").rglob("*")
            if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A team's pico Qwen2 with its own BPE tokenizer (built once; copied per test)."""
    return team_model(tmp_path_factory.mktemp("their") / "qwen2", "qwen2", "bpe")


@pytest.fixture
def team(skeleton, source, tmp_path) -> Path:
    team_contract(skeleton)
    folder = tmp_path / "import"
    shutil.copytree(source, folder)
    return folder


def bred_refused(name: str, file: str, key: str | None, words: str) -> None:
    before = files_and_bytes()
    with pytest.raises(StudbookError) as info:
        run_stage("breed", name)  # checks first, then compute: it must stop at the checks
    assert (info.value.file, info.value.key) == (file, key), str(info.value)
    assert words in str(info.value), str(info.value)
    assert files_and_bytes() == before  # no artifact, no temporary, nothing rewritten


def sparse_tensor(file: Path, parameters: int) -> None:
    """A real safetensors file holding one float32 tensor of `parameters` values, written
    sparse (the bytes are a hole): the 2 GB bomb costs no disk."""
    header = json.dumps({"extra": {"dtype": "F32", "shape": [parameters],
                                   "data_offsets": [0, 4 * parameters]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(file, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + 4 * parameters)


def contract(**compatibility) -> None:
    path = Path("conf/contract/team_pico.yaml")
    text = path.read_text()
    for key, value in compatibility.items():
        text = text.replace("compatibility:\n", f"compatibility:\n  {key}: {value}\n", 1)
    path.write_text(text)


def test_an_extra_2_gb_tensor_is_counted_from_the_headers(team):
    sparse_tensor(team / "extra.safetensors", 512 << 20)  # 536,870,912 float32: 2 GiB
    propose_import("big", str(team), TEAM, seed=0)
    contract(max_bytes=8 << 30)  # let the size pass: the parameter count must catch it
    bred_refused("big", str(team), "contract.compatibility.max_parameters",
                 "parameters in its safetensors headers (all tensors, 2 file(s))")


def test_an_import_larger_than_the_contracts_byte_budget_is_refused(team):
    sparse_tensor(team / "extra.safetensors", 512 << 20)
    propose_import("big", str(team), TEAM, seed=0)
    bred_refused("big", str(team), "contract.compatibility.max_bytes", "the contract allows")


def test_a_vocabulary_beyond_the_contract_or_the_embedding_is_refused(team):
    propose_import("wide", str(team), TEAM, seed=0)
    contract(max_vocabulary=100)
    bred_refused("wide", str(team / "tokenizer.json"), "contract.compatibility.max_vocabulary",
                 "tokenizer entries; the contract allows 100")


def test_tokenizer_entries_past_the_embedding_are_refused(team):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(team / "tokenizer.json"))
    tokenizer.add_tokens([f"extra_{i}" for i in range(3000)])
    tokenizer.save(str(team / "tokenizer.json"))
    propose_import("wide", str(team), TEAM, seed=0)
    bred_refused("wide", str(team / "tokenizer.json"), "vocab_size", "ids past its embedding")


@pytest.mark.parametrize("file,edit,key", [
    ("tokenizer_config.json", lambda d: d.update(auto_map={"AutoTokenizer": ["evil.Tok", None]}), "auto_map"),
    ("config.json", lambda d: d.update(text_config={"auto_map": {"AutoConfig": "evil.Config"}}),
     "text_config.auto_map"),
], ids=["tokenizer-config", "nested-text-config"])
def test_auto_map_anywhere_in_any_json_is_refused(team, file, edit, key):
    data = json.loads((team / file).read_text())
    edit(data)
    (team / file).write_text(json.dumps(data))
    before = files_and_bytes()
    with pytest.raises(StudbookError) as info:
        propose_import("remote", str(team), TEAM, seed=0)
    assert (info.value.file, info.value.key) == (str(team / file), key)
    assert "asks for remote code" in str(info.value)
    assert files_and_bytes() == before


def test_a_symlinked_weights_file_is_refused_naming_the_source(team, tmp_path):
    elsewhere = tmp_path / "elsewhere.safetensors"
    (team / "model.safetensors").rename(elsewhere)
    os.symlink(elsewhere, team / "model.safetensors")
    with pytest.raises(StudbookError) as info:
        propose_import("linked", str(team), TEAM, seed=0)
    assert info.value.file == str(team / "model.safetensors")
    assert "a symbolic link" in str(info.value)


# --- models and merges that could not be bred -----------------------------------------------

@pytest.mark.parametrize("model,key,words", [
    ("architecture: lama\ncontext_length: 64\n", "architecture",
     "'lama' is not a causal-LM architecture transformers"),
    ("architecture: gpt_neox\ncontext_length: 64\nconfig: {hidden_size: 30, num_attention_heads: 4}\n",
     "config.num_attention_heads", "hidden_size 30 is not divisible by num_attention_heads 4"),
    ("architecture: gpt2\ncontext_length: 64\nconfig: {n_embd: 30, n_head: 4}\n",
     "config", "transformers cannot build this gpt2: `embed_dim` must be divisible by num_heads"),
], ids=["unknown-architecture", "heads", "transformers-refusal"])
def test_a_model_transformers_cannot_build_is_named_with_its_file(skeleton, model, key, words):
    Path("conf/model/odd.yaml").write_text(model)
    before = files_and_bytes()
    with pytest.raises(StudbookError) as info:
        propose("g1", "scratch", [], 1, {**PICO, "model": "odd"})
    assert (info.value.file, info.value.key) == ("conf/model/odd.yaml", key), str(info.value)
    assert words in str(info.value) and len(str(info.value)) < 400  # not transformers' 700 names
    assert files_and_bytes() == before


def _two_parents() -> None:
    for name in ("p1", "p2"):
        propose(name, "scratch", [], 1, PICO)


@pytest.mark.parametrize("method,parameters,key,words", [
    ("ties", {"models": [{"model": "p2", "parameters": {"weight": 1.0, "density": 1.5}}], "base_model": "p1"},
     "parameters.models[0].parameters.density", "density 1.5 is outside (0, 1]"),
    ("linear", {"models": [{"model": "p1", "parameters": {"weight": 1.0}},
                           {"model": "p2", "parameters": {"weight": -1.0}}]},
     "parameters.models", "the weights sum to 0"),
    ("slerp", {"base_model": "p1", "parameters": {"t": 2.0}}, "parameters.parameters.t", "t 2.0 is outside [0, 1]"),
], ids=["density", "weights-cancel", "slerp-t"])
def test_merge_parameters_that_would_breed_nan_are_refused_before_the_parents_exist(
        skeleton, method, parameters, key, words):
    _two_parents()
    before = files_and_bytes()
    with pytest.raises(StudbookError) as info:
        propose("m", method, ["p1", "p2"], 0, {**PICO, "model": "inherited", "train": "none"},
                parameters=parameters)
    assert (info.value.file, info.value.key) == ("generations/m/recipe.yaml", key), str(info.value)
    assert words in str(info.value)
    assert files_and_bytes() == before


def test_a_harvest_task_on_the_held_out_split_is_refused_at_check(skeleton):
    """stdlib_bpb_concurrency reads the held-out split and is not one of the pico contract's
    benchmarks: harvesting it would train children on held-out items."""
    path = Path("conf/contract/stdlib_pico.yaml")
    path.write_text(path.read_text().replace("tasks: [stdlib_mining_bpb_general, stdlib_mining_bpb_tests]",
                                             "tasks: [stdlib_mining_bpb_general, stdlib_bpb_concurrency]"))
    before = files_and_bytes()
    with pytest.raises(StudbookError) as info:
        propose("g1", "scratch", [], 1, PICO)
    assert (info.value.file, info.value.key) == ("conf/contract/stdlib_pico.yaml", "harvest.tasks[1]")
    assert "reads data/benchmarks/heldout/bpb_concurrency.jsonl, not a mining split" in str(info.value)
    assert files_and_bytes() == before


# --- a full disk ------------------------------------------------------------------------------

def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_disk_that_fills_up_while_breeding_ends_in_one_line(skeleton):
    """RLIMIT_FSIZE makes every write past 64 KiB fail as a full disk would (EFBIG; ENOSPC
    takes the same path): no traceback, a message saying what to do, no output in place."""
    propose("g1", "scratch", [], 1, PICO)
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    result = subprocess.run([sys.executable, "stages/prepare_data.py", "stdlib"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    result = subprocess.run([sys.executable, "stages/breed.py", "g1"], env=env, capture_output=True,
                            text=True, timeout=600, preexec_fn=_file_size_limit(64 << 10))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "out of space" in result.stderr and "re-run `dvc repro`" in result.stderr, result.stderr[-2000:]
    assert not Path("models/g1").exists()


def test_a_cycle_made_by_editing_a_recipe_is_named_before_dvc_sees_it(skeleton):
    propose("p1", "scratch", [], 1, PICO)
    propose("c", "finetune", ["p1"], 0, {**PICO, "model": "inherited"})
    recipe = Path("generations/p1/recipe.yaml")
    recipe.write_text(recipe.read_text().replace("method: scratch", "method: finetune")
                      .replace("parents: []", "parents: [c]"))
    before = files_and_bytes()
    for name in ("c", "p1"):
        with pytest.raises(StudbookError) as info:
            load_generation(name)
        assert info.value.key == "parents" and "the parents form a cycle" in str(info.value)
        assert info.value.file in ("generations/c/recipe.yaml", "generations/p1/recipe.yaml")
    assert "c → p1 → c" in str(info.value) or "p1 → c → p1" in str(info.value)
    assert files_and_bytes() == before
