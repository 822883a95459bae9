"""Pieces of `studbook evolve` that need no queue: killing a process tree, reading why a
stage failed, the search's README, search names."""

import subprocess
import sys
import time

import pytest

from studbook.core.errors import StudbookError
from studbook.evolve.driver import Search, _error
from studbook.evolve.ledger import markdown
from studbook.evolve.queue import _alive, descendants, kill_tree


def test_kill_tree_stops_a_process_and_the_children_it_started():
    # a parent that ignores SIGTERM with a child that sleeps: SIGKILL after the grace
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while not descendants(parent.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = descendants(parent.pid)
    kill_tree(parent.pid, grace=0.5)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child) and parent.returncode == -9


def test_the_reason_a_stage_failed_is_its_own_error_line():
    traceback = ("Running stage 'generations/x/dvc.yaml:breed':\nTraceback (most recent call last):\n"
                 "  File \"x.py\", line 1\npeft.utils.error.NoMatchingPeftModuleError: Target modules "
                 "{'no_such_proj'} not found\nERROR: failed to reproduce 'generations/x/dvc.yaml:breed'")
    assert _error(traceback).startswith("peft.utils.error.NoMatchingPeftModuleError: Target modules")
    assert _error("noise\nerror: conf/train/x.yaml: steps: must be > 0\nERROR: failed") == \
        "error: conf/train/x.yaml: steps: must be > 0"
    assert _error("ERROR: failed to reproduce 'a'") == "ERROR: failed to reproduce 'a'"
    assert _error("") == "no output"


def test_the_search_readme_lists_every_candidate_escaped_and_is_deterministic():
    rows = [
        {"kind": "candidate", "trial": 0, "name": "s-000", "operator": "lora", "status": "promoted",
         "params": {"operator": "lora", "train.lr": 0.0021234, "lora.parameters.rank": 16},
         "selection": {"net_gain": 0.03, "ci_low": 0.02, "ci_high": 0.04},
         "confirmation": {"mean": 0.028, "ci_low": 0.015, "ci_high": 0.041, "noise_floor": 0.012},
         "timing": {"started": 0.0, "finished": 100.0, "wall_seconds": 100.0, "train_seconds": 60.0,
                    "not_training_share": 0.4}},
        {"kind": "candidate", "trial": 1, "name": "s-001", "operator": "lora|<b>x</b>", "status": "crashed",
         "params": {}, "error": "boom"},
        {"kind": "noise", "trial": 0, "name": "s-noise-founder", "status": "measured",
         "noise": {"parent": "founder", "seed": 1235}},
    ]
    text = markdown("s", rows)
    assert text == markdown("s", rows)
    assert ("| 0 | s-000 | lora | lora.parameters.rank=16, train.lr=0.002123 | promoted | +0.0300 "
            "[+0.0200, +0.0400] | +0.0280 [+0.0150, +0.0410] | 0.0120 | 60.0 | 100.0 | 40.0% |") in text
    assert "| noise | s-noise-founder | re-breed | founder seed 1235 | measured |" in text
    assert "<b>" not in text and "lora\\|" in text
    assert "- statuses: promoted 1, crashed 1" in text


@pytest.mark.parametrize("name", ["Bad", "a/b", "x" * 60, "-x"])
def test_a_search_name_is_a_generation_name_prefix(name, tmp_path):
    with pytest.raises(StudbookError):
        Search(name, tmp_path)


def test_the_profile_hook_times_real_stage_processes_and_joins_them_per_candidate(tmp_path):
    """`--profile`: three real Python processes named like the stages, started with the hook
    on PYTHONPATH, each leave their start, end and import time; the join splits the
    candidate's wall time into parts that add up to it."""
    import os
    from pathlib import Path

    from studbook.evolve import profile

    hook = Path(profile.__file__).parent / "profiling"
    (tmp_path / "stages").mkdir()
    out = tmp_path / "profile"
    out.mkdir()
    sleeps = {"breed": 0.6, "evaluate": 0.3, "record": 0.1}
    for stage, seconds in sleeps.items():  # `import json, decimal` are real top-level imports
        (tmp_path / "stages" / f"{stage}.py").write_text(f"import decimal, json, time\ntime.sleep({seconds})\n")
    env = {**os.environ, "PYTHONPATH": str(hook), "STUDBOOK_PROFILE_DIR": str(out)}
    started = time.time()
    for stage in sleeps:
        subprocess.run([sys.executable, f"stages/{stage}.py", "s-000"], cwd=tmp_path, env=env, check=True)
    subprocess.run([sys.executable, "-c", "pass"], cwd=tmp_path, env=env, check=True)  # not a stage
    finished = time.time() + 1.0
    lines = profile.processes(out)
    assert len(lines) == 4 and all(p["started"] <= p["ended"] for p in lines)
    assert all(p["import_seconds"] > 0 for p in lines if p["argv"][0].startswith("stages/"))
    row = {"kind": "candidate", "trial": 0, "name": "s-000", "status": "rejected",
           "timing": {"started": started, "finished": finished, "wall_seconds": finished - started,
                      "train_seconds": 0.5}}
    parts = profile.breakdown([row], out)["s-000"]
    assert sum(parts[k] for k in profile.PARTS) == pytest.approx(parts["wall"], abs=1e-6)
    assert parts["evaluate"] >= 0.3 and parts["dvc"] >= 1.0 - 0.05 and parts["other"] >= 0.2 - 0.05
    assert profile.breakdown([{**row, "name": "s-001"}], out) == {}  # another candidate's processes


def _git(cwd, *args):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_a_noise_run_another_search_measured_is_reused_only_for_the_same_parent_and_seed(tmp_path):
    """Design R1: a second search from the same founder pays nothing for its noise floor;
    another founder (weights), another seed or a vanished experiment is never reused."""
    import json

    from studbook.evolve.driver import measured_noise
    from studbook.evolve.ledger import write_ledger

    repo = tmp_path
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@t")
    _git(repo, "config", "user.name", "t")
    (repo / "cards").mkdir()
    (repo / "cards" / "founder.json").write_text(json.dumps({"weights_sha256": "a" * 64, "recipe_sha256": "r" * 64}))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "baseline")
    baseline = _git(repo, "rev-parse", "HEAD")
    (repo / "x").write_text("the noise run's experiment")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "experiment")
    experiment = _git(repo, "rev-parse", "HEAD")
    row = {"kind": "noise", "trial": 0, "name": "one-noise-founder", "status": "measured", "parents": ["founder"],
           "noise": {"parent": "founder", "seed": 1235, "weights_sha256": "b" * 64},
           "experiment": {"name": "one-noise-founder", "commit": experiment, "baseline": baseline},
           "timing": {"started": 0.0, "finished": 900.0, "wall_seconds": 900.0}, "compute": {"flops": 1e15}}
    write_ledger(repo / ".dvc" / "tmp" / "evolve" / "one" / "ledger.jsonl", [row])
    wanted = {"parent": "founder", "seed": 1235, "parent_sha256": "a" * 64, "parent_recipe_sha256": "r" * 64}
    reused = measured_noise(repo, "two", wanted)
    assert reused["reused_from"] == "one" and reused["timing"] is None
    assert reused["experiment"]["commit"] == experiment and reused["noise"]["weights_sha256"] == "b" * 64
    assert measured_noise(repo, "one", wanted) is None  # a search never reuses itself
    assert measured_noise(repo, "two", {**wanted, "seed": 1236}) is None
    assert measured_noise(repo, "two", {**wanted, "parent_sha256": "c" * 64}) is None
    write_ledger(repo / ".dvc" / "tmp" / "evolve" / "one" / "ledger.jsonl",
                 [{**row, "experiment": {**row["experiment"], "commit": "d" * 40}}])
    assert measured_noise(repo, "two", wanted) is None
    # reused: it costs the second search nothing
    from studbook.evolve.ledger import summary
    assert summary([{**reused, "trial": 0}])["worker_seconds"] == 0.0


def test_a_task_that_exited_0_is_still_running_until_its_experiment_ref_is_fetched(tmp_path):
    """DVC's worker fetches an experiment's ref after the executor has written its return
    code: a 0 without a ref is being collected (found by the must-show search, where two
    successful candidates were recorded as crashed), a failure only after COLLECT_SECONDS,
    and a success as soon as the ref is there."""
    import json
    import os

    from studbook.evolve.queue import COLLECT_SECONDS, FAILED, RUNNING, SUCCESS, Queue

    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@t")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "f").write_text("x")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "baseline")
    baseline = _git(tmp_path, "rev-parse", "HEAD")
    queue = Queue(tmp_path, tmp_path, baseline)
    run_file = tmp_path / ".dvc/tmp/exps/run/t1/t1.json"
    run_file.parent.mkdir(parents=True)
    run_file.write_text(json.dumps({"pid": 1, "returncode": 0}))
    assert queue.state("t1", "s-000").state == RUNNING
    old = time.time() - COLLECT_SECONDS - 1
    os.utime(run_file, (old, old))
    assert queue.state("t1", "s-000").state == FAILED
    _git(tmp_path, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/s-000", baseline)
    state = queue.state("t1", "s-000")
    assert state.state == SUCCESS and state.finished == pytest.approx(old)
    run_file.write_text(json.dumps({"pid": 1, "returncode": 255}))
    assert queue.state("t1", "s-001").state == FAILED


def test_a_tasks_start_is_its_processs_own_start_however_late_the_driver_looks():
    from studbook.evolve.queue import process_start

    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(1.5)  # the driver looks late
        started = process_start(child.pid)
        assert before - 0.05 <= started <= before + 1.0
    finally:
        child.kill()
        child.wait()
    assert process_start(child.pid) is None


def _dvc_queue(root):
    """A git + DVC repository at `root` with one commit, and the search queue on it (the
    repository is its own worktree)."""
    import os

    from studbook.evolve.queue import Queue, dvc

    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@t")
    _git(root, "config", "user.name", "t")
    subprocess.run(dvc("init", "-q"), cwd=root, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "baseline")
    return Queue(root, root, _git(root, "rev-parse", "HEAD"))


def test_a_candidate_queued_again_replaces_its_queued_twin_and_any_experiment_of_its_name(tmp_path):
    """Found by CI: the driver was killed after DVC had queued `t1-003` but before the ledger
    said so; the resumed search queued it again, both ran, and the second could not be queued
    again over the first's experiment. Queued again, a name has one task and may replace a ref."""
    queue = _dvc_queue(tmp_path)
    baseline = queue.baseline

    def write():  # what write_candidate does: the folder, untracked, in the worktree
        gen = tmp_path / "generations" / "s-000"
        gen.mkdir(parents=True, exist_ok=True)
        (gen / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")

    write()
    first = queue.queue_candidate("s-000")
    write()
    other = queue.queue_candidate("s-001", folder="s-000")
    assert queue.queued_named("s-000") == [first] and queue.queued_named("s-001") == [other]
    # an experiment of the name exists (the first task ran): queueing again without -f fails
    _git(tmp_path, "update-ref", f"refs/exps/{baseline[:2]}/{baseline[2:]}/s-000", baseline)
    write()
    with pytest.raises(StudbookError, match="conflicts with existing experiment"):
        queue.queue_candidate("s-000")
    write()
    second = queue.queue_candidate("s-000", again=True)
    assert second != first and queue.queued_named("s-000") == [second]
    assert queue.queued_named("s-001") == [other]  # another candidate's task is untouched


def test_a_task_taken_by_a_worker_killed_before_its_executor_started_is_stale(tmp_path):
    """Found by the kill -9 test: a worker had taken `t1-001`'s message (DVC wrote its
    executor's .run file) when the search was killed; the task never got a run file, so the
    resumed search saw it queued forever while idle workers came and went. A task is queued
    while its message waits in the inbox or a worker lives; else no one will run it."""
    import os
    import shutil

    from studbook.evolve.queue import QUEUED, STALE

    queue = _dvc_queue(tmp_path)
    gen = tmp_path / "generations" / "s-000"
    gen.mkdir(parents=True)
    (gen / "dvc.yaml").write_text("stages:\n  echo:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    task = queue.queue_candidate("s-000")

    assert queue.workers_alive() == 0 and queue.waiting() == {task}  # DVC's own message, read
    assert queue.state(task, "s-000").state == QUEUED
    inbox = tmp_path / ".dvc/tmp/exps/celery/broker/in"
    taken = tmp_path / "taken"
    taken.mkdir()
    for message in inbox.glob("*.msg"):  # what a worker's consume does: the message leaves the inbox
        shutil.move(message, taken / message.name)
    assert queue.waiting() == set() and queue.state(task, "s-000").state == STALE
    pidfile = tmp_path / ".dvc/tmp/exps/celery/dvc-exp-worker-1.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(os.getpid()))  # a live worker may still be starting its executor
    assert queue.state(task, "s-000").state == QUEUED
