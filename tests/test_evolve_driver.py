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
