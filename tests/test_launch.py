"""A generation's training across two processes with `accelerate launch` (DDP over gloo
on the CPU), chosen at run time: dvc.yaml and the lock never see the launcher."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest

from conftest import copy_skeleton, git_dvc_init, run
from pico import team_model
from test_team_models import team_contract

PY = sys.executable
# two launched processes and a founder import: ~1 min on 2 cores, beyond the default budget
pytestmark = pytest.mark.slow
TRAIN = """# 12 steps of 4 sequences: the loss visibly falls on a pico model
steps: 12
batch_size: 4
lr: 1.0e-2
warmup_steps: 1
log_every: 4
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summary_of(log: str, generation: str) -> dict:
    """The `key: value` block the breed stage of `generation` printed."""
    block = log[log.index(f"generation: {generation}"):]
    return dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and " " not in line.split(": ")[0])


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("launch")
    source = team_model(base / "their-model", "qwen2", "bpe")
    repo = copy_skeleton(base / "studbook")
    team_contract(repo)
    (repo / "conf/train/ddp.yaml").write_text(TRAIN)
    git_dvc_init(repo)
    run([PY, "-m", "studbook.cli", "propose", "founder", "--from", str(source), "--contract", "team_pico"], repo)
    for name in ("ddp", "single"):
        run([PY, "-m", "studbook.cli", "propose", name, "--method", "finetune", "--parents", "founder",
             "--train", "ddp", "--data", "stdlib_all", "--contract", "team_pico"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "founder and two fine-tunes"], repo)
    os.environ["STUDBOOK_LAUNCHER"] = (f"accelerate launch --multi_gpu --num_processes 2 "
                                       f"--main_process_port {free_port()}")
    try:
        ddp = run([PY, "-m", "dvc", "repro", "generations/ddp/dvc.yaml:breed"], repo, timeout=900)
    finally:
        del os.environ["STUDBOOK_LAUNCHER"]
    return {"repo": repo, "ddp": summary_of(ddp.stdout, "ddp"), "log": ddp.stdout + ddp.stderr}


@pytest.fixture(scope="module")
def compared(launched) -> dict:
    """The same recipe bred in one process, and the DDP child evaluated both ways."""
    repo = launched["repo"]
    os.environ["STUDBOOK_LAUNCHER"] = (f"accelerate launch --multi_gpu --num_processes 2 "
                                       f"--main_process_port {free_port()}")
    try:
        run([PY, "-m", "dvc", "repro", "generations/ddp/dvc.yaml:evaluate"], repo, timeout=900)
    finally:
        del os.environ["STUDBOOK_LAUNCHER"]
    sharded = {"metrics": json.loads((repo / "generations/ddp/metrics.json").read_text()),
               "items": (repo / "generations/ddp/eval/samples/stdlib_bpb_general.jsonl").read_text()}
    run([PY, "stages/evaluate.py", "ddp"], repo, timeout=900)  # the same evaluation, one process
    single = run([PY, "-m", "dvc", "repro", "generations/single/dvc.yaml:breed"], repo, timeout=900)
    return {**launched, "single": summary_of(single.stdout, "single"), "sharded": sharded}


def test_two_processes_trained_and_their_tokens_add_up(launched):
    ddp = launched["ddp"]
    assert "launcher: accelerate launch --multi_gpu --num_processes 2" in launched["log"]
    assert ddp["processes"] == "2"
    per_process = [int(n) for n in ddp["tokens_per_process"].split(",")]
    assert per_process == [12 * 2 * 128] * 2  # 12 steps x 2 of the 4 sequences x 128 tokens, each
    assert int(ddp["tokens"]) == sum(per_process) == 12 * 4 * 128


def test_the_loss_falls_and_the_artifact_loads(launched):
    from studbook.operators.artifacts import load_model

    repo = launched["repo"]
    losses = [float(line.split("\t")[-1]) for line in
              (repo / "generations/ddp/live/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.1
    model = load_model(repo / "models/ddp")
    assert model.config.model_type == "qwen2"
    meta = json.loads((repo / "models/ddp/studbook.json").read_text())
    assert meta["compute"]["processes"] == 2 and meta["compute"]["tokens"] == 12 * 4 * 128
    assert meta["numerics"]["threads"] == 1  # two processes share the two threads


def test_the_global_batch_is_the_recipes_on_any_number_of_processes(compared):
    """One process or two: the same global batches, so nearly the same course."""
    ddp, single = compared["ddp"], compared["single"]
    assert int(single["tokens"]) == int(ddp["tokens"])
    assert float(ddp["final_loss_nats"]) == pytest.approx(float(single["final_loss_nats"]), abs=0.05)


def test_the_launcher_never_enters_a_recipe_or_a_lock(launched):
    repo = launched["repo"]
    for path in ("generations/ddp/recipe.yaml", "generations/ddp/dvc.yaml", "generations/ddp/dvc.lock"):
        text = (repo / path).read_text()
        assert "accelerate" not in text and "processes" not in text


def test_evaluation_data_parallel_gives_the_single_process_scores(compared):
    """lm-eval shards the requests over the two processes and gathers them on the main one."""
    repo, sharded = compared["repo"], compared["sharded"]
    single = json.loads((repo / "generations/ddp/metrics.json").read_text())
    assert sharded["metrics"].keys() == single.keys()
    for task, value in single.items():
        assert sharded["metrics"][task] == pytest.approx(value, abs=1e-4)
    rows = [json.loads(line) for line in sharded["items"].splitlines()]
    again = [json.loads(line) for line in
             (repo / "generations/ddp/eval/samples/stdlib_bpb_general.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in again] and len(rows) == 6  # every item, once
    for row, other in zip(rows, again):
        assert row["bits_per_byte"] == pytest.approx(other["bits_per_byte"], abs=1e-4)
