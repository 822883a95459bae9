"""`studbook merge CONFIG OUT` never destroys what it was not asked to (issue 13): an OUT
that exists, or that is one of the inputs, is refused with nothing changed on disk, unless
`--replace` asks for it — and then it is replaced atomically, once the merge is complete.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run

PY = sys.executable


@pytest.fixture
def models(tmp_path: Path) -> Path:
    from studbook.operators.artifacts import build_model, save_model
    from studbook.operators.tokenizer import build_tokenizer
    from studbook.repository.recipes import ModelSpec

    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/llama_pico.yaml").read_text()))
    for index, name in enumerate(("a", "b")):
        save_model(build_model(spec, seed=index), build_tokenizer(spec.context_length), tmp_path / name)
    (tmp_path / "merge.yaml").write_text(
        "merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 0.5}}\n"
        "  - {model: b, parameters: {weight: 0.5}}\ndtype: float32\n")
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def merge(folder: Path, out: str, *extra: str):
    return run([PY, "-m", "studbook.cli", "merge", "merge.yaml", out, *extra], folder, check=False)


def test_an_existing_output_is_refused_and_left_as_it_was(models):
    (models / "out").mkdir()
    (models / "out/notes.txt").write_text("unrelated work")
    before = snapshot(models)
    done = merge(models, "out")
    assert done.returncode == 2 and "out" in done.stderr and "--replace" in done.stderr
    assert snapshot(models) == before


@pytest.mark.parametrize("out", ["a", "a/merged", "."])
def test_an_output_that_is_an_input_is_refused(models, out):
    before = snapshot(models)
    done = merge(models, out)
    assert done.returncode == 2 and "merge.yaml" in done.stderr and "models[0].model" in done.stderr
    assert snapshot(models) == before


def test_replace_replaces_atomically_once_the_merge_is_complete(models):
    from studbook.operators.artifacts import load_model

    (models / "out").mkdir()
    (models / "out/notes.txt").write_text("stale")
    done = merge(models, "out", "--replace")
    assert done.returncode == 0, done.stderr
    assert not (models / "out/notes.txt").exists()
    assert load_model(models / "out").config.model_type == "llama"
    assert not list(models.glob(".out.*"))  # no temporary left beside it


def test_a_new_output_needs_no_flag(models):
    assert merge(models, "fresh").returncode == 0
    assert (models / "fresh/model.safetensors").is_file()
