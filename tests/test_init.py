"""`studbook init` in an empty directory, then the new repository's README command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run

PY = sys.executable


@pytest.mark.slow  # breeds a founder in a new repository (~40 s; the default run breeds elsewhere)
def test_init_then_readme_command_breeds_a_founder(tmp_path, monkeypatch):
    target = tmp_path / "team-studbook"
    for key, value in {"GIT_AUTHOR_NAME": "team", "GIT_AUTHOR_EMAIL": "team@studbook.invalid",
                       "GIT_COMMITTER_NAME": "team", "GIT_COMMITTER_EMAIL": "team@studbook.invalid"}.items():
        monkeypatch.setenv(key, value)
    out = run([PY, "-m", "studbook.cli", "init", str(target), "--contract", "stdlib_pico",
               "--model", "llama_pico", "--train", "pico"], tmp_path)
    assert f"initialised: {target}" in out.stdout
    assert run(["git", "log", "--format=%s"], target).stdout.strip() == \
        "studbook initialised: configs, stages, founder proposed"
    assert run(["git", "status", "--porcelain"], target).stdout == ""
    for path in ("conf/contract/stdlib_pico.yaml", "tasks/stdlib_bpb_general.yaml", "stages/breed.py",
                 "src/studbook/stages/breed.py", ".github/workflows/studbook-pr.yml",
                 ".github/workflows/studbook-pr-comment.yml", ".gitattributes",
                 "generations/founder/recipe.yaml", "generations/founder/dvc.yaml"):
        assert (target / path).is_file(), path
    assert "core" in (target / ".dvc/config").read_text() and "analytics = false" in (target / ".dvc/config").read_text()
    readme = (target / "README.md").read_text()
    command = "bash scripts/breed.sh"
    assert f"```bash\n{command}" in readme
    # the README's command, reusing this environment instead of installing a new one
    bred = run(["env", f"STUDBOOK_VENV={Path(PY).parents[1]}", "bash", "-c", command], target, timeout=900)
    assert "setup: using" in bred.stderr and "card: cards/founder.md" in bred.stdout
    card = json.loads((target / "cards/founder.json").read_text())
    assert card["verdict"] == "promoted" and card["name"] == "founder"
    again = run([PY, "-m", "studbook.cli", "init", str(target)], tmp_path, check=False)
    assert again.returncode == 2 and "not empty" in again.stderr
