"""The demo ecology command on pico models: founder -> adapters -> merge -> student.

Slow (about five minutes): `pytest -m slow`. Real git clone, real `dvc repro` for each
generation, one commit per generation, population printed at the end.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import copy_skeleton, git_dvc_init, run

PY = sys.executable


@pytest.mark.slow
def test_demo_builds_the_pico_ecology_one_commit_per_generation(tmp_path):
    source = copy_skeleton(tmp_path / "source")
    git_dvc_init(source)
    clone = tmp_path / "clone"
    result = run([PY, "-m", "studbook.cli", "demo", "--ecology", "pico", "--dir", str(clone)],
                 source, timeout=1800)
    names = ["founder", "tests-lora", "general-lora", "specialist", "student"]
    log = run(["git", "log", "--format=%s"], clone).stdout.splitlines()
    assert len(log) == len(names) + 1 and all(any(l.startswith(n + ":") for l in log) for n in names)
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
    rows = {r["name"]: r for r in json.loads(run([PY, "-m", "studbook.cli", "population", "--json"],
                                                 clone).stdout)}
    assert sorted(rows) == sorted(names)
    assert rows["tests-lora"]["kind"] == "adapter" and rows["specialist"]["method"] == "ties"
    assert rows["student"]["method"] == "distill" and len(rows["student"]["parents"]) == 1
    assert any(r["verdict"] == "promoted" for n, r in rows.items() if n != "founder")
    for name in names:
        assert f"generation: {name} verdict:" in result.stderr
        assert (clone / "cards" / f"{name}.md").is_file()
    assert "wall_seconds:" in result.stdout
    # the whole studbook is reproducible from its commits: nothing left to run
    status = run([PY, "-m", "dvc", "status"], clone).stdout
    assert "up to date" in status
