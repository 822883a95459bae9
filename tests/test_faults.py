"""Damaged weights, tampered lineage and hostile inputs: each refused, naming the file.

Real artifacts (a pico Llama saved by the library), damaged the way disks, transfers
and pull requests damage them; nothing is mocked.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from studbook.operators.artifacts import build_model, load_model, save_model, verify_artifact, weights_sha256, \
    write_meta
from studbook.core.errors import StudbookError
from studbook.repository.recipes import ModelSpec
from studbook.operators.tokenizer import build_tokenizer, tokenizer_fingerprint

from conftest import ROOT


@pytest.fixture
def artifact(tmp_path) -> Path:
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/llama_pico.yaml").read_text()))
    folder = tmp_path / "models" / "pico"
    save_model(build_model(spec, seed=0), build_tokenizer(spec.context_length), folder)
    write_meta(folder, {"name": "pico", "weights_sha256": weights_sha256(folder)})
    return folder


def _weights(folder: Path) -> Path:
    return folder / "model.safetensors"


def truncate(folder: Path) -> None:
    data = _weights(folder).read_bytes()
    _weights(folder).write_bytes(data[: len(data) // 2])


def bad_header(folder: Path) -> None:
    data = bytearray(_weights(folder).read_bytes())
    data[8:16] = b"#garbage"  # inside the JSON header
    _weights(folder).write_bytes(bytes(data))


def huge_header_length(folder: Path) -> None:
    data = bytearray(_weights(folder).read_bytes())
    data[:8] = (2**40).to_bytes(8, "little")
    _weights(folder).write_bytes(bytes(data))


def _poison(folder: Path, value: float) -> None:
    tensors = load_file(str(_weights(folder)))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[3] = value
    save_file(tensors, str(_weights(folder)), metadata={"format": "pt"})


DAMAGE = {
    "truncated file": (truncate, "cannot load weights"),
    "bad header": (bad_header, "cannot load weights"),
    "header length beyond the file": (huge_header_length, "cannot load weights"),
    "NaN tensor": (lambda f: _poison(f, math.nan), "holds NaN or Inf"),
    "Inf tensor": (lambda f: _poison(f, math.inf), "holds NaN or Inf"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_weights_are_refused_naming_the_file(artifact, damage):
    damage_fn, words = DAMAGE[damage]
    damage_fn(artifact)
    with pytest.raises(StudbookError) as info:
        load_model(artifact)
    assert words in str(info.value) and str(artifact) in str(info.value)


def test_a_flipped_byte_is_caught_by_the_hash(artifact):
    data = bytearray(_weights(artifact).read_bytes())
    data[-5] ^= 0x01  # one bit of the last weight: still loads, silently different
    _weights(artifact).write_bytes(bytes(data))
    load_model(artifact)  # the file is still well-formed ...
    with pytest.raises(StudbookError) as info:  # ... but no longer what was recorded
        verify_artifact(artifact)
    assert info.value.file == str(_weights(artifact)) and "damaged or tampered" in str(info.value)


def test_a_tampered_parent_stops_a_child_before_compute(skeleton):
    from stagehelp import run_stage
    from studbook.repository.proposal import propose

    choices = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}
    spec = ModelSpec.model_validate(yaml.safe_load(Path("conf/model/llama_pico.yaml").read_text()))
    propose("base", "scratch", [], 0, choices)
    folder = Path("models/base")
    save_model(build_model(spec, seed=0), build_tokenizer(spec.context_length), folder)
    write_meta(folder, {"name": "base", "kind": "model", "parameters": 28928,
                        "tokenizer_sha256": tokenizer_fingerprint(build_tokenizer(128)),
                        "weights_sha256": weights_sha256(folder)})
    untrained = {**choices, "train": "none"}  # the parents are checked whatever the corpus
    propose("child", "lora", ["base"], 0, untrained, parameters={"rank": 2})
    tensors = load_file(str(folder / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 1.01  # someone re-saved the parent's weights
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(StudbookError, match="damaged or tampered"):
        run_stage("breed", "child")
    assert not list(Path("generations/child").glob(".bred.tmp-*"))  # no scratch left behind
    # and a parent that was never bred is named as such
    propose("orphan", "distill", ["child"], 0, untrained)
    with pytest.raises(StudbookError, match="parent 'child' has not been bred yet"):
        run_stage("breed", "orphan")


def test_function_hooks_outside_the_reviewed_task_folder_are_refused(tmp_path):
    from studbook.evidence.tasks import check_task_hooks

    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tmp_path / "evil.py").write_text("open('sentinel', 'w')\n")
    (tasks / "bad.yaml").write_text("task: bad\nprocess_docs: !function ../evil.process\n")
    with pytest.raises(StudbookError, match="Python identifiers only") as info:
        check_task_hooks(tasks)
    assert info.value.file == str(tasks / "bad.yaml")
    (tasks / "bad.yaml").write_text("task: bad\nprocess_docs: !function utils.process\n")
    (tasks / "utils.py").write_text("def process(docs):\n    return docs\n")
    check_task_hooks(tasks)  # a hook inside the reviewed folder is fine
    assert not (tmp_path / "sentinel").exists()


def test_hostile_card_context_cannot_escape_the_sandbox():
    from jinja2.exceptions import SecurityError

    from studbook.evidence.cards import render_card

    with pytest.raises(SecurityError):
        render_card({}, template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    # values from a card JSON are data, never template code
    text = render_card({"x": "{{ 7 * 7 }}"}, template="{{ x }}")
    assert text == "{{ 7 * 7 }}\n"
