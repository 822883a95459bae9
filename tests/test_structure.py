"""Consistency of the shipped tree: stages, pipelines, configs, safety rules."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from studbook.artifacts import check_safe_folder
from studbook.errors import StudbookError
from studbook.ecology import Ecology
from studbook.recipes import Contract, DataSpec, ModelSpec, TrainSpec

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted((ROOT / "stages").glob("*.py"))


@pytest.mark.parametrize("stage", STAGES, ids=lambda p: p.name)
def test_stage_imports_only_the_library(stage):
    tree = ast.parse(stage.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{stage.name}: relative import"
            assert node.module.split(".")[0] not in {p.stem for p in STAGES} | {"stages"}
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] not in {p.stem for p in STAGES} | {"stages"}


def _pipelines():
    files = [ROOT / "dvc.yaml", ROOT / "src/studbook/templates/generation.dvc.yaml.j2"]
    files += sorted((ROOT / "generations").glob("*/dvc.yaml"))
    return files


@pytest.mark.parametrize("pipeline", _pipelines(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stage_script_exists_and_is_a_dep(pipeline):
    text = pipeline.read_text()
    if pipeline.suffix == ".j2":
        from jinja2 import Environment, StrictUndefined

        # every branch: an adapter child with parents and a harvest stage
        text = Environment(undefined=StrictUndefined).from_string(text).render(
            name="x", dvc_yaml="d", recipe_file="r", group_files=["g"], contract_file="c",
            corpus="data/corpus", artifact="adapters/x", breed_deps=["src/studbook/merging.py"],
            has_parents=True, harvest=True, hard_examples="hard_examples/c/x.jsonl",
            hard_examples_task="hard_examples/c/x.yaml", parent_hard_examples=["hard_examples/c/p.jsonl"],
            parent_artifacts=["models/p"], parent_evals=["generations/p/eval"], target=True,
            scratch_reference=["models/s", "generations/s/live"])
    stages = yaml.safe_load(text)["stages"]
    for name, stage in stages.items():
        script = stage["cmd"].split()[1]
        assert (ROOT / script).is_file(), f"{name}: {script} missing"
        assert script in stage["deps"], f"{name}: {script} not in its own deps"
        for dep in stage["deps"]:
            if "{" not in dep and not dep.startswith(("generations/", "models/", "adapters/", "data/",
                                                       "hard_examples/")) \
                    and dep not in ("r", "g", "c"):
                assert (ROOT / dep).exists(), f"{name}: dep {dep} missing"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in stages.values():
        for key in stage.get("params", []):
            assert key in params


@pytest.mark.parametrize("group,model", [("contract", Contract), ("model", ModelSpec),
                                         ("train", TrainSpec), ("data", DataSpec),
                                         ("ecology", Ecology)])
def test_every_shipped_config_validates(group, model):
    files = sorted((ROOT / "conf" / group).glob("*.yaml"))
    assert files
    for file in files:
        model.model_validate(yaml.safe_load(file.read_text()))


def test_shipped_generations_validate(monkeypatch):
    from studbook.generation import load_generation

    monkeypatch.chdir(ROOT)
    for recipe in sorted((ROOT / "generations").glob("*/recipe.yaml")):
        assert load_generation(recipe.parent.name).recipe.name == recipe.parent.name


def test_pickle_weights_are_refused_unopened(tmp_path):
    sentinel = tmp_path / "sentinel"
    (tmp_path / "model").mkdir()
    # a pickle whose payload would create the sentinel if anything unpickled it
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    (tmp_path / "model" / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(StudbookError, match="pickle-based weights are refused") as info:
        check_safe_folder(tmp_path / "model")
    assert "pytorch_model.bin" in str(info.value)
    assert not sentinel.exists()


def test_remote_code_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Y"}}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(StudbookError, match="trust_remote_code stays off"):
        check_safe_folder(tmp_path)


def test_cli_help_is_instant_and_complete():
    from typer.testing import CliRunner

    from studbook.cli import app

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    registered = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert registered == {"propose", "population", "show", "check", "methods", "merge", "demo",
                          "lineage", "negatives", "init"}
    assert [g.name for g in app.registered_groups] == ["card"]
    registered.add("card diff")
    readme = (ROOT / "README.md").read_text()
    for command in registered:
        assert command.split()[0] in result.output
        assert f"studbook {command}" in readme, f"`studbook {command}` is not documented"
        shown = CliRunner().invoke(app, [*command.split(), "--help"])
        assert shown.exit_code == 0 and "Usage:" in shown.output


@pytest.mark.parametrize("kind", ["breed", "train", "evaluate", "gate", "harvest", "card"])
def test_generation_stage_scripts_have_help_and_usage(kind):
    import subprocess
    import sys

    script = str(ROOT / "stages" / f"{kind}.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith(f"usage: python stages/{kind}.py NAME")
    wrong = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert wrong.returncode == 2 and "usage:" in wrong.stderr
    missing = subprocess.run([sys.executable, script, "ghost"], capture_output=True, text=True,
                             cwd=ROOT)
    assert missing.returncode == 1
    assert "error: generations/ghost/recipe.yaml: no generation named 'ghost'" in missing.stderr


def test_pull_request_workflow_and_generated_files():
    workflow = yaml.safe_load((ROOT / ".github/workflows/studbook-pr.yml").read_text())
    steps = workflow["jobs"]["breed-and-review"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert "bash scripts/setup.sh" in commands and "dvc repro" in commands
    assert 'studbook card diff "origin/${{ github.base_ref }}" HEAD' in commands
    sticky = next(s for s in steps if "sticky-pull-request-comment" in s.get("uses", ""))
    assert sticky["with"]["header"] == "studbook-card-diff"  # one comment, updated per push
    attributes = (ROOT / ".gitattributes").read_text()
    assert "generations/*/dvc.lock linguist-generated=true" in attributes
    assert "cards/*.json linguist-generated=true" in attributes
    assert "cards/*.md" not in attributes.replace("(cards/*.md)", "")
