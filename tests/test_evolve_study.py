"""The study of a search (issue 14): a journal file that resumes after kill -9 asking
exactly what an uninterrupted search would, and survives a torn last line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from conftest import ROOT
from studbook.evolve.space import load_space
from studbook.evolve.study import ask, open_study, repair_journal, tell

SPACE = ROOT / "conf/search/stdlib_niche.yaml"


def gain(params: dict) -> float:
    """A deterministic stand-in objective (the real one is a gated candidate)."""
    return round(sum(hash(str(v)) % 97 for v in params.values()) / 97.0, 6)


def run_search(path, count: int) -> list[dict]:
    space = load_space(SPACE)
    study = open_study(path, space, "s")
    while len(study.trials) < count:
        trial, proposal = ask(study, space, conf_dir=ROOT / "conf")
        tell(study, trial.number, gain(proposal.params))
    return [t.params for t in study.trials]


def test_a_search_killed_mid_way_resumes_asking_the_same_trials(tmp_path):
    journal = tmp_path / "resumed.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_evolve_study import run_search
        run_search({str(journal)!r}, 4)
        os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, as a power loss
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONHASHSEED="0"))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    # the stand-in objective uses hash(): the same PYTHONHASHSEED in both halves
    resumed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from test_evolve_study import run_search
        print(json.dumps(run_search({str(journal)!r}, 8)))
        print(json.dumps(run_search({str(tmp_path / 'again.jsonl')!r}, 8)))
    """)], cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after_kill, uninterrupted = (json.loads(line) for line in resumed.stdout.splitlines()[-2:])
    assert len(after_kill) == 8 and after_kill == uninterrupted
    assert after_kill[0]["operator"] == "lora" and after_kill[0]["lora.parameters.rank"] == 16  # enqueued once
    assert sum(1 for p in after_kill if p.get("lora.parameters.rank") == 16 and p.get("train.lr") == 0.002) == 1


def test_a_torn_last_line_is_repaired_and_the_study_reopens(tmp_path):
    journal = tmp_path / "study.jsonl"
    run_search(journal, 3)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "trial_id": 3, "par')  # torn append
    assert repair_journal(journal) == len(b'{"op_code": 5, "worker_id": "x", "trial_id": 3, "par')
    assert journal.read_bytes() == whole
    assert len(run_search(journal, 5)) == 5
    assert repair_journal(journal) == 0  # nothing to repair in a whole file


def test_a_failed_candidate_is_told_once(tmp_path):
    import optuna

    space = load_space(SPACE)
    study = open_study(tmp_path / "study.jsonl", space, "s")
    trial, _ = ask(study, space, conf_dir=ROOT / "conf")
    tell(study, trial.number, None)
    tell(study, trial.number, None)  # a resumed driver may tell again: harmless
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
