"""DVC experiments on generations, on a fresh clone: queue, workers, `exp show`, `params diff`.

A clone has git only (no DVC cache): the queued experiment breeds what it needs. The
recipe and the config groups that decide the weights are DVC params, so a seed, a
learning rate or a rank is visible to `dvc exp show` and `dvc params diff`, and
`dvc exp run -S` sets it.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from conftest import copy_skeleton, git_dvc_init, run

PY = sys.executable
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_queued_experiment_on_a_fresh_clone_shows_seed_and_learning_rate(tmp_path):
    origin = copy_skeleton(tmp_path / "origin")
    git_dvc_init(origin)
    pico = ["--model", "llama_pico", "--train", "pico", "--contract", "stdlib_pico"]
    run([PY, "-m", "studbook.cli", "propose", "pico", *pico], origin)
    run([PY, "-m", "studbook.cli", "propose", "pico-ft", "--method", "finetune", "--parents", "pico", *pico],
        origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "propose pico and pico-ft"], origin)
    run([PY, "-m", "dvc", "repro", "-P"], origin, timeout=900)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "bred"], origin)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert not (clone / ".dvc/cache").exists()  # nothing bred here: git only
    queued = run([PY, "-m", "dvc", "exp", "run", "--queue", "-n", "seed7",
                  "-S", "generations/pico-ft/recipe.yaml:seed=7", "generations/pico-ft/dvc.yaml"], clone)
    assert "Queued experiment 'seed7'" in queued.stdout
    run([PY, "-m", "dvc", "queue", "start", "-j", "1"], clone)
    deadline = time.time() + 1200
    while time.time() < deadline:
        status = run([PY, "-m", "dvc", "queue", "status"], clone).stdout
        if "seed7" in status and ("Success" in status or "Failed" in status):
            break
        time.sleep(5)
    assert "Success" in status, status + run([PY, "-m", "dvc", "queue", "logs", "seed7"], clone,
                                             check=False).stdout[-3000:]

    shown = json.loads(run([PY, "-m", "dvc", "exp", "show", "--json"], clone).stdout)
    experiments = [rev for entry in shown for exp in (entry.get("experiments") or []) for rev in exp["revs"]]
    seed7 = next(rev for rev in experiments if rev["name"] == "seed7")
    params = seed7["data"]["params"]
    assert params["generations/pico-ft/recipe.yaml"]["data"]["seed"] == 7
    assert params["conf/train/pico.yaml"]["data"]["lr"] == 0.01
    assert "generations/pico-ft/metrics.json" in seed7["data"]["metrics"]
    table = run([PY, "-m", "dvc", "exp", "show", "--csv"], clone).stdout
    header = table.splitlines()[0].split(",")
    assert "generations/pico-ft/recipe.yaml:seed" in header and "lr" in header

    run([PY, "-m", "dvc", "exp", "apply", "seed7"], clone)
    diff = run([PY, "-m", "dvc", "params", "diff"], clone).stdout
    assert "generations/pico-ft/recipe.yaml" in diff and "seed" in diff and "1234" in diff and "7" in diff
