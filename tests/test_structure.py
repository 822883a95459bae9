"""Consistency of the shipped tree: stages, pipelines, configs, safety rules."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from studbook.operators.artifacts import check_safe_folder
from studbook.core.errors import StudbookError
from studbook.repository.ecology import Ecology
from studbook.repository.recipes import Contract, DataSpec, ModelSpec, TrainSpec

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
    return [ROOT / "dvc.yaml"] + sorted((ROOT / "generations").glob("*/dvc.yaml"))


@pytest.mark.parametrize("pipeline", _pipelines(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stage_script_exists_and_is_a_dep(pipeline):
    stages = yaml.safe_load(pipeline.read_text())["stages"]
    for name, stage in stages.items():
        script = stage["cmd"].split()[1]
        assert (ROOT / script).is_file(), f"{name}: {script} missing"
        assert script in stage["deps"], f"{name}: {script} not in its own deps"
        for dep in stage["deps"]:
            if dep.startswith(("src/", "stages/", "conf/", "tasks/")):
                assert (ROOT / dep).exists(), f"{name}: dep {dep} missing"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in stages.values():
        for key in stage.get("params", []):
            if isinstance(key, str):  # a section, or a dotted key path such as corpora.stdlib
                section = params
                for part in key.split("."):
                    assert isinstance(section, dict) and part in section, key
                    section = section[part]
            else:  # `- file:`: a whole params file
                assert all((ROOT / file).is_file() for file in key)


def test_shipped_pipelines_are_what_the_code_derives(monkeypatch):
    """Every dvc.yaml lists exactly each stage's code closure and data: `studbook refresh` is a no-op."""
    from studbook.repository.proposal import refresh_all

    monkeypatch.chdir(ROOT)
    before = {p: p.read_text() for p in _pipelines()}
    try:
        assert refresh_all(None, ROOT) == [], "run `studbook refresh` and commit the dvc.yaml files"
    finally:
        for path, text in before.items():
            path.write_text(text)


def test_code_deps_follow_imports_at_any_depth(tmp_path):
    """The closure sees function-level and relative imports, parent packages and data files."""
    from studbook.core.codedeps import closure

    pkg = tmp_path / "src/studbook"
    (pkg / "a").mkdir(parents=True)
    (pkg / "templates").mkdir()
    (tmp_path / "stages").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a/__init__.py").write_text("")
    (pkg / "a/one.py").write_text("def f():\n    from .two import g\n    return g\n")
    (pkg / "a/two.py").write_text("DATA_FILES = ('templates/t.j2',)\nfrom studbook.a import three\n")
    (pkg / "a/three.py").write_text("")
    (pkg / "a/unused.py").write_text("")
    (pkg / "templates/t.j2").write_text("")
    (tmp_path / "stages/x.py").write_text("import sys\nfrom studbook.a.one import f\n")
    found = {str(f.relative_to(tmp_path)) for f in closure(tmp_path, ["stages/x.py"])}
    assert found == {"stages/x.py", "src/studbook/__init__.py", "src/studbook/a/__init__.py",
                     "src/studbook/a/one.py", "src/studbook/a/two.py", "src/studbook/a/three.py",
                     "src/studbook/templates/t.j2"}


@pytest.mark.parametrize("kind", ["breed", "evaluate", "record"])
def test_a_stage_module_is_in_its_own_closure_only(kind):
    from studbook.core.codedeps import stage_code

    own = f"src/studbook/stages/{kind}.py"
    for other in ("breed", "evaluate", "record", "prepare_data", "build_benchmarks"):
        assert (own in stage_code(ROOT, other)) == (other == kind)


def test_stage_modules_never_import_each_other():
    names = {p.stem for p in (ROOT / "src/studbook/stages").glob("*.py")} - {"__init__", "entry"}
    for file in (ROOT / "src/studbook/stages").glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] == ["studbook", "stages"]:
                    imported = parts[2:] or [a.name for a in node.names]
                    assert not set(imported) & (names - {file.stem}), f"{file.name} imports {imported}"


@pytest.mark.parametrize("group,model", [("contract", Contract), ("model", ModelSpec),
                                         ("train", TrainSpec), ("data", DataSpec),
                                         ("ecology", Ecology)])
def test_every_shipped_config_validates(group, model):
    files = sorted((ROOT / "conf" / group).glob("*.yaml"))
    assert files
    for file in files:
        model.model_validate(yaml.safe_load(file.read_text()))


def test_shipped_generations_validate(monkeypatch):
    from studbook.repository.generation import load_generation

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
                          "lineage", "negatives", "init", "refresh", "drift", "candidates", "evolve",
                          "site", "publish"}
    assert [g.name for g in app.registered_groups] == ["card"]
    registered.add("card diff")
    readme = (ROOT / "README.md").read_text()
    for command in registered:
        assert command.split()[0] in result.output
        assert f"studbook {command}" in readme, f"`studbook {command}` is not documented"
        shown = CliRunner().invoke(app, [*command.split(), "--help"])
        assert shown.exit_code == 0 and "Usage:" in shown.output


@pytest.mark.parametrize("kind", ["breed", "evaluate", "record"])
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
    assert 'studbook card diff "$BASE" HEAD' in commands
    comment = yaml.safe_load((ROOT / ".github/workflows/studbook-pr-comment.yml").read_text())
    sticky = next(s for s in comment["jobs"]["comment"]["steps"]
                  if "sticky-pull-request-comment" in s.get("uses", ""))
    assert sticky["with"]["header"] == "studbook-card-diff"  # one comment, updated per push
    attributes = (ROOT / ".gitattributes").read_text()
    assert "generations/*/dvc.lock linguist-generated=true" in attributes
    assert "cards/*.json linguist-generated=true" in attributes
    assert "cards/*.md" not in attributes.replace("(cards/*.md)", "")


def test_a_stage_runs_the_repositorys_own_library_whatever_is_installed(skeleton):
    """The installed studbook (this checkout, editable) is not what a stage of another
    repository runs: its entry puts that repository's src/ first."""
    import subprocess
    import sys

    body = skeleton / "src/studbook/stages/record.py"
    body.write_text(body.read_text().replace('"""Stage record:', '"""Stage record (this copy):', 1))
    shown = subprocess.run([sys.executable, "stages/record.py", "--help"], capture_output=True, text=True,
                           cwd=skeleton)
    assert shown.returncode == 0 and "Stage record (this copy):" in shown.stdout
