"""A search's candidates through DVC's experiment queue, from a private git worktree.

The queue snapshots the workspace it is run from: tracked and staged changes go into every
queued experiment, untracked files into none (verified for docs/design/evolve.md, V1–V4).
So a search queues from its own worktree of the baseline commit
(`.dvc/tmp/evolve/SEARCH/work`, sharing the repository's DVC cache), where each candidate
folder is staged, queued (`dvc exp run --queue`) and unstaged again; workers are
`dvc queue start -j N`. A finished candidate is a DVC experiment (never removed): its
commit holds the recipe, lock, verdict and card, its weights and per-item scores are in
the cache, and `dvc exp apply NAME` brings it back at any time.

Polling reads the files the queue's workers write (`.dvc/tmp/exps/run/TASK/TASK.json`:
the executor's pid and return code) and the experiment refs: one `dvc queue status` costs
seconds on a busy machine and takes the queue's lock. DVC's own commands do the rest
(queueing, starting workers, clearing a stale task). Everything that knows DVC's
internals is in this module; dvc is pinned to 3.67.x and the slow tests exercise it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from studbook.core.errors import StudbookError

QUEUED, RUNNING, SUCCESS, FAILED, STALE = "queued", "running", "success", "failed", "stale"
# A task's run file has its return code once the executor exits, but its experiment ref is
# fetched into the repository by the worker afterwards (seconds on a busy machine): a 0
# without a ref is still being collected, and a failure only after this long.
COLLECT_SECONDS = 300.0


def _run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise StudbookError(f"`{' '.join(cmd)}` failed ({result.returncode}): "
                            f"{(result.stderr or result.stdout).strip()[-800:]}")
    return result.stdout


def dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def share_cache(repo: Path, work: Path) -> None:
    """Point worktree `work` at the cache `repo` uses (its own or one it shares), so
    parents' outputs are found and candidates' outputs land where the repository looks."""
    cache = _run(dvc("cache", "dir"), repo).strip()
    _run(dvc("config", "--local", "cache.dir", cache), work)
    _run(dvc("config", "--local", "core.analytics", "false"), work)


@dataclass(frozen=True)
class TaskState:
    state: str
    pid: int | None = None
    returncode: int | None = None
    finished: float | None = None  # when it ended (its return code written), epoch seconds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def process_start(pid: int | None) -> float | None:
    """Epoch seconds at which process `pid` started (its start in clock ticks since boot,
    /proc/PID/stat field 22, against /proc/uptime), or None once it is gone."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError, TypeError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, children first listed before theirs (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, grace: float) -> None:
    """SIGTERM to a process and its descendants, SIGKILL to what is left after `grace`
    seconds. `dvc queue kill -f` alone orphans the stage process (V12), so the tree is
    found here."""
    tree = [*descendants(pid), pid]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for member in tree:
            try:
                os.kill(member, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(map(_alive, tree)):
            time.sleep(0.2)


class Queue:
    """One search's queue, run from its worktree `work` of commit `baseline`."""

    def __init__(self, repo: Path, work: Path, baseline: str):
        self.repo, self.work, self.baseline = repo.resolve(), work, baseline

    # the worktree ---------------------------------------------------------------------
    def ensure_worktree(self) -> None:
        """The worktree at the baseline, sharing the repository's DVC cache; a candidate
        folder left staged by a killed driver is removed."""
        if not (self.work / ".git").exists():
            _run(["git", "worktree", "prune"], self.repo)
            self.work.parent.mkdir(parents=True, exist_ok=True)
            _run(["git", "worktree", "add", "-q", "--detach", str(self.work), self.baseline], self.repo)
            share_cache(self.repo, self.work)
        _run(["git", "reset", "-q"], self.work)
        _run(["git", "clean", "-qfd", "generations", "cards"], self.work)
        self.assert_clean()

    def assert_clean(self) -> None:
        # a tracked change here would leak into every queued candidate (V4)
        status = _run(["git", "status", "--porcelain", "--untracked-files=no"], self.work)
        if status.strip():
            raise StudbookError(f"the search's worktree has changes that would enter every "
                                f"candidate:\n{status}", file=str(self.work))

    # queueing -------------------------------------------------------------------------
    def _queue(self, name: str, args: list[str], again: bool = False) -> str:
        # queued again (its worker died, or the driver was killed while queueing it): a task of
        # the same name queued before the kill is dropped first (else two run, and the second
        # finds the first's experiment), and `-f` lets this one replace a ref left behind
        if again:
            self.drop_queued(name)
        _run(dvc("exp", "run", "--queue", *(["-f"] if again else []), "-n", name, *args), self.work)
        return _run(["git", "rev-parse", "refs/exps/celery/stash"], self.work).strip()

    def queued_named(self, name: str) -> list[str]:
        """The tasks still waiting in the queue as experiment `name` (DVC's stash entries,
        whose messages are `dvc-exp:REV:BASELINE:NAME`)."""
        log = _run(["git", "log", "-g", "--format=%H %gs", "refs/exps/celery/stash", "--"], self.work,
                   check=False)
        # (a reflog subject reads "commit: dvc-exp:…")
        return [line.split()[0] for line in log.splitlines()
                if " dvc-exp:" in line and line.rsplit(":", 1)[-1] == name]

    def drop_queued(self, name: str) -> None:
        tasks = self.queued_named(name)
        if tasks:
            _run(dvc("queue", "remove", *tasks), self.work)

    def queue_candidate(self, name: str, folder: str | None = None, again: bool = False) -> str:
        """Queue as experiment `name` the generation folder (default: `name`) the caller wrote
        in the worktree; returns the task id. The folder is staged only while queueing
        (untracked files are not queued, V1). `again`: see `_queue`."""
        self.assert_clean()
        folder = folder or name
        paths = [f"generations/{folder}"]
        _run(["git", "add", "-f", *paths], self.work)
        try:
            task = self._queue(name, [f"generations/{folder}/dvc.yaml"], again)
        finally:
            _run(["git", "rm", "-r", "-q", "--cached", *paths], self.work)
            _run(["git", "clean", "-qfd", *paths], self.work)
        return task

    def queue_noise(self, name: str, parent: str, seed: int, again: bool = False) -> str:
        """The parent re-bred with another seed, inside an experiment only (`-S` leaves the
        worktree untouched, V5); never applied, since it re-breeds under the parent's paths."""
        self.assert_clean()
        return self._queue(name, ["-S", f"generations/{parent}/recipe.yaml:seed={seed}",
                                  f"generations/{parent}/dvc.yaml"], again)

    def ensure_workers(self, workers: int, env: dict) -> None:
        """`dvc queue start -j N` unless N workers are alive (it is idempotent, V13)."""
        if self.workers_alive() < workers:
            # the workers are daemons that keep inherited pipes open: no capture, or this waits
            # for them to exit
            with open(self.work.parent / "workers.log", "ab") as log:
                subprocess.run(dvc("queue", "start", "-j", str(workers)), cwd=self.work, env=env,
                               stdout=log, stderr=log, stdin=subprocess.DEVNULL, check=True)

    def workers_alive(self) -> int:
        alive = 0
        for pidfile in (self.work / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid"):
            try:
                alive += _alive(int(pidfile.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return alive

    def waiting(self) -> set[str]:
        """The tasks whose message still waits in the queue's inbox, not yet taken by a
        worker (kombu's filesystem transport: one JSON file a message, its body in base64,
        naming the task's stash revision)."""
        found = set()
        for message in (self.work / ".dvc/tmp/exps/celery/broker/in").glob("*.msg"):
            try:
                body = base64.b64decode(json.loads(message.read_text())["body"]).decode()
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written or moved: a worker is taking it, or it is being queued
            found.update(re.findall(r'"stash_rev": "([0-9a-f]{40})"', body))
        return found

    def stop_workers(self) -> None:
        _run(dvc("queue", "stop"), self.work, check=False)

    # state ----------------------------------------------------------------------------
    def _run_file(self, task: str) -> Path:
        return self.work / ".dvc/tmp/exps/run" / task / f"{task}.json"

    def experiment_ref(self, name: str) -> str | None:
        ref = f"refs/exps/{self.baseline[:2]}/{self.baseline[2:]}/{name}"
        out = _run(["git", "rev-parse", "-q", "--verify", ref], self.work, check=False).strip()
        return out or None

    def state(self, task: str, name: str) -> TaskState:
        file = self._run_file(task)
        if not file.is_file():
            # a worker takes a task's message before it starts the executor: one killed in
            # between (kill -9 of the search) leaves a task no worker will ever run
            if self.workers_alive() or task in self.waiting():
                return TaskState(QUEUED)
            return TaskState(STALE)
        try:
            info = json.loads(file.read_text())
        except (OSError, ValueError):  # being written
            return TaskState(RUNNING)
        pid, code = info.get("pid"), info.get("returncode")
        if code is None:
            return TaskState(RUNNING if pid and _alive(pid) else STALE, pid)
        finished = file.stat().st_mtime  # rewritten with the return code at exit
        if code == 0 and self.experiment_ref(name):
            return TaskState(SUCCESS, pid, code, finished)
        if code == 0 and time.time() - finished < COLLECT_SECONDS:
            # the executor has exited; its worker fetches the experiment's ref after that
            return TaskState(RUNNING, pid, code, finished)
        return TaskState(FAILED, pid, code, finished)

    def log_tail(self, task: str, lines: int = 30) -> str:
        log = self._run_file(task).with_suffix(".out")
        if not log.is_file():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, task: str, grace: float = 10.0) -> None:
        """Stop a running candidate (its cap): the executor and every process under it."""
        state = self.state(task, "")
        if state.pid:
            kill_tree(state.pid, grace)

    def clear_stale(self, task: str) -> None:
        """A task whose worker died with it stays "Running" forever (V10): kill, remove and
        clean, so the same candidate can be queued again."""
        _run(dvc("queue", "kill", task), self.work, check=False)
        _run(dvc("queue", "remove", task), self.work, check=False)
        _run(dvc("exp", "clean"), self.work, check=False)

    def show(self, commit: str, path: str) -> str:
        return _run(["git", "show", f"{commit}:{path}"], self.work)
