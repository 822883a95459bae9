"""Kill -9 and concurrency on a real population: git, `dvc repro`, lm-eval, torch.

One pico population (founder `pico`, LoRA siblings `sib-a` and `sib-b` bred at once in
two worktrees as two pull requests would be, and `soup`, a TIES merge of all three) is
bred once. Then each stage kind is killed with SIGKILL at its worst moment — the whole
process group, `dvc` included, as a power cut would — via STUDBOOK_FAILPOINT:

- mid-training (after the second step) and mid-merge (after the tenth tensor), in breed,
- evaluation done but not yet recorded (evaluate), promotion decided but not yet
  recorded, and the card's JSON twin written but not the card (record).

After each kill: nothing half-written is in place, every dvc.lock and every ancestor is
byte-identical, the killed stage shows as changed, and a plain `dvc repro` restores
exactly the uninterrupted result and leaves no temporary behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studbook.core.atomic import sha256_tree

from conftest import copy_skeleton, git_dvc_init, run

PY = sys.executable
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = str(Path(PY).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def start(cmd: list[str], cwd: Path, **extra: str) -> subprocess.Popen:
    """Start `cmd` in a process group of its own (so a failpoint kills it all, dvc included)."""
    return subprocess.Popen(cmd, cwd=cwd, env=_env(**extra), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: int = 900) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def propose(repo: Path, name: str, *args: str) -> None:
    run([PY, "-m", "studbook.cli", "propose", name, "--model", "llama_pico", "--train", "pico",
         "--contract", "stdlib_pico", *args], repo)


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def locks(repo: Path) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes()
            for p in sorted(repo.glob("generations/*/dvc.lock")) + [repo / "dvc.lock"]}


def temporaries(repo: Path) -> list[str]:
    """Leftover atomic-write temporaries (`.NAME.tmp-PID-…`, `.NAME.old-PID`) outside .git/.dvc."""
    found = []
    for path in repo.rglob(".*"):
        rel = path.relative_to(repo).parts
        if rel[0] in (".git", ".dvc"):
            continue
        if ".tmp-" in path.name or ".old-" in path.name:
            found.append("/".join(rel))
    return found


def gone(paths: list[str], timeout: float = 60.0) -> None:
    """Wait until the killed writers named in temporaries (`.X.tmp-PID-…`) have been reaped:
    a rerun started while one is still a zombie would take it for alive and keep its
    temporary (swept by the next run instead)."""
    pids = {int(part.split("-")[1]) for part in (Path(p).name.split(".tmp")[-1] for p in paths)
            if part.count("-") >= 2 and part.split("-")[1].isdigit()}
    deadline = time.time() + timeout
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)


def outcome(repo: Path, name: str, kind: str = "models") -> dict:
    """What a generation's breeding produced, minus wall-clock seconds."""
    meta = json.loads((repo / kind / name / "studbook.json").read_text())
    card = [line for line in (repo / f"cards/{name}.md").read_text().splitlines()
            if "wall time" not in line]
    return {
        "weights_sha256": meta["weights_sha256"],
        "metrics": (repo / f"generations/{name}/metrics.json").read_text(),
        "verdict": (repo / f"generations/{name}/verdict.json").read_text(),
        "hard_examples": (repo / f"hard_examples/stdlib_pico/{name}.jsonl").read_text(),
        "card": card,
    }


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("reliability")
    repo = copy_skeleton(base / "main")
    git_dvc_init(repo)
    propose(repo, "pico")
    commit(repo, "propose pico")
    run([PY, "-m", "dvc", "repro", "generations/pico/dvc.yaml"], repo, timeout=900)
    commit(repo, "pico bred")

    # Two pull requests, each in its own worktree sharing the main repository's DVC cache,
    # bred at the same time.
    cache = str(repo / ".dvc" / "cache")
    workers = {}
    for name, rank, seed in (("sib-a", 2, 11), ("sib-b", 4, 12)):
        tree = base / name
        run(["git", "worktree", "add", "-q", str(tree), "-b", f"feature-{name}"], repo)
        run([PY, "-m", "dvc", "config", "--local", "cache.dir", cache], tree)
        run([PY, "-m", "dvc", "checkout", "-q"], tree)
        propose(tree, name, "--method", "lora", "--parents", "pico", "--parameters",
                f"{{rank: {rank}}}", "--seed", str(seed), "--data", "tests_niche")
        workers[name] = tree
    started = time.perf_counter()
    running = {name: start([PY, "-m", "dvc", "repro", f"generations/{name}/dvc.yaml"], tree)
               for name, tree in workers.items()}
    sibling_logs = {name: finish(process) for name, process in running.items()}
    sibling_seconds = time.perf_counter() - started
    for name, (code, log) in sibling_logs.items():
        assert code == 0, log[-3000:]
        commit(workers[name], f"{name} bred")
    for number, name in enumerate(workers, start=1):
        run(["git", "merge", "-q", "--no-ff", f"feature-{name}", "-m",
             f"Merge pull request #{number} from feature-{name}"], repo)
    run([PY, "-m", "dvc", "checkout", "-q"], repo)

    propose(repo, "soup", "--method", "ties", "--parents", "pico,sib-a,sib-b",
            "--parameters", "{base_model: pico, models: [{model: sib-a, parameters: {weight: 1.0, "
            "density: 0.5}}, {model: sib-b, parameters: {weight: 1.0, density: 0.5}}]}", "--train", "none")
    commit(repo, "propose soup")
    # The same generation bred twice at once: DVC's repository lock lets one run and
    # refuses the other cleanly, before it touches anything.
    twins = [start([PY, "-m", "dvc", "repro", "generations/soup/dvc.yaml"], repo) for _ in range(2)]
    twin_results = [finish(process) for process in twins]
    commit(repo, "soup bred")
    return {"repo": repo, "workers": workers, "sibling_logs": sibling_logs,
            "sibling_seconds": sibling_seconds, "twin_results": twin_results,
            "reference": {"soup": outcome(repo, "soup"), "sib-a": outcome(repo, "sib-a", "adapters")},
            "soup_lock": (repo / "generations/soup/dvc.lock").read_bytes()}


def test_siblings_bred_concurrently_in_two_worktrees_merge_cleanly(population):
    repo = population["repo"]
    for name in ("sib-a", "sib-b"):
        code, log = population["sibling_logs"][name]
        assert f"generation: {name}" in log and "kind: adapter" in log
        assert (repo / f"cards/{name}.md").is_file()
        meta = json.loads((repo / f"adapters/{name}/studbook.json").read_text())
        assert meta["base"]["sha256"] == json.loads((repo / "models/pico/studbook.json").read_text())["weights_sha256"]
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    status = run([PY, "-m", "dvc", "status", "generations/sib-a/dvc.yaml", "generations/sib-b/dvc.yaml"], repo)
    assert "up to date" in status.stdout
    # each equals a run of its own: re-training sib-a alone gives the same weights
    before = population["reference"]["sib-a"]["weights_sha256"]
    run([PY, "-m", "dvc", "repro", "-f", "-s", "generations/sib-a/dvc.yaml:breed"], repo, timeout=600)
    assert json.loads((repo / "adapters/sib-a/studbook.json").read_text())["weights_sha256"] == before
    run(["git", "checkout", "-q", "--", "."], repo)
    run([PY, "-m", "dvc", "checkout", "-q", "-f"], repo)


def test_the_same_generation_bred_twice_at_once_runs_once(population):
    """DVC refuses the second run cleanly (`--wait-for-lock` waits only for the repository
    lock, not for the per-output locks, so it does not make the second run wait)."""
    (code_a, log_a), (code_b, log_b) = population["twin_results"]
    assert sorted([code_a, code_b])[0] == 0 != sorted([code_a, code_b])[1], log_a[-2000:] + log_b[-2000:]
    loser = log_b if code_a == 0 else log_a
    # DVC's repository lock, or its per-output read/write lock, stopped it before it ran
    assert "Unable to acquire lock" in loser or "it is being blocked by" in loser, loser[-2000:]
    assert "Running stage 'generations/soup/dvc.yaml:" not in loser
    repo = population["repo"]
    assert population["reference"]["soup"]["card"]
    # the winner's result equals a single, uncontended run: breed soup again alone
    # (-f --downstream from soup's first stage forces soup only, not its ancestors)
    run([PY, "-m", "dvc", "repro", "-f", "--downstream", "generations/soup/dvc.yaml:breed"], repo, timeout=900)
    assert outcome(repo, "soup") == population["reference"]["soup"]
    assert (repo / "generations/soup/dvc.lock").read_bytes() == population["soup_lock"]
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


# (generation, stage, failpoint, the stage's outputs that must not be in place after the kill)
KILLS = {
    "mid-training": ("sib-a", "breed", "say:train step 2/*", ["adapters/sib-a"]),
    "mid-merge": ("soup", "breed", "say:merge 10/*", ["models/soup"]),
    "evaluation done, not recorded": ("soup", "evaluate", "commit:*generations/soup/eval",
                                      ["generations/soup/eval", "generations/soup/metrics.json"]),
    "promotion decided, not recorded": ("soup", "record", "commit:*generations/soup/verdict.json",
                                        ["generations/soup/verdict.json", "cards/soup.md"]),
    "card twin written, card not": ("soup", "record", "commit:cards/soup.md", ["cards/soup.md"]),
}


@pytest.mark.parametrize("moment", list(KILLS))
def test_kill_9_loses_nothing_and_a_rerun_restores_the_result(population, moment):
    repo = population["repo"]
    name, stage, failpoint, outputs = KILLS[moment]
    kind = "adapters" if name.startswith("sib") else "models"
    ancestors = {p: sha256_tree(repo / p) for p in ("models/pico", "adapters/sib-a", "adapters/sib-b")
                 if not p.endswith(name)}
    locks_before = locks(repo)

    process = start([PY, "-m", "dvc", "repro", "-f", "-s", f"generations/{name}/dvc.yaml:{stage}"],
                    repo, STUDBOOK_FAILPOINT=failpoint)
    code, log = finish(process)
    assert code == -signal.SIGKILL, f"the failpoint was not reached ({code}):\n{log[-3000:]}"
    assert locks(repo) == locks_before
    assert {p: sha256_tree(repo / p) for p in ancestors} == ancestors
    for output in outputs:
        assert not (repo / output).exists(), f"{output} is in place after a kill during {stage}"
    assert temporaries(repo), "the kill should have caught a write in flight"
    gone(temporaries(repo))
    status = run([PY, "-m", "dvc", "status", f"generations/{name}/dvc.yaml"], repo).stdout
    assert f"{stage}:" in status or f"dvc.yaml:{stage}" in status, status

    # recompute what was killed, as the first breeding of a generation would (a plain
    # `dvc repro` may instead restore the earlier run's outputs from DVC's cache), then
    # let a plain `dvc repro` finish whatever depends on it
    rerun = run([PY, "-m", "dvc", "repro", "-f", "-s", f"generations/{name}/dvc.yaml:{stage}"], repo,
                timeout=900)
    assert f"Running stage 'generations/{name}/dvc.yaml:{stage}'" in rerun.stdout
    run([PY, "-m", "dvc", "repro", f"generations/{name}/dvc.yaml"], repo, timeout=900)
    assert outcome(repo, name, kind) == population["reference"][name]
    assert temporaries(repo) == []
    if name == "soup":  # nothing in it depends on wall-clock time: the lock is byte-identical
        assert (repo / "generations/soup/dvc.lock").read_bytes() == population["soup_lock"]
    assert "up to date" in run([PY, "-m", "dvc", "status", f"generations/{name}/dvc.yaml"], repo).stdout
    # put the working tree back to the committed population for the next case
    run(["git", "checkout", "-q", "--", "."], repo)
    run([PY, "-m", "dvc", "checkout", "-q", "-f"], repo)
