"""`studbook evolve`: the breeding loop — ask, breed in parallel, gate, keep everything.

One driver per search asks Optuna for candidates (`evolve.study`), writes each as an
ordinary generation (`repository.proposal.propose`, scored on the search's selection
items), queues it through DVC's experiment queue (`evolve.queue`), enforces the cap per
candidate, and records every outcome in the ledger before telling Optuna. The reference
parent is re-bred with another seed beside the candidates (the noise floor). When the
budget is spent, the best candidates by selection gain are confirmed on the other items
(`evolve.promotion`) and the winners committed on branch `evolve/SEARCH`.

Live state is under `.dvc/tmp/evolve/SEARCH/` (ignored by git and DVC): the frozen space,
the study journal, the ledger and the worktrees. The same command resumes a search killed
at any point: a finished candidate is never re-run, one that was running when its worker
died is queued again (`attempts` counts it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import yaml

from studbook.core.errors import StudbookError
from studbook.evolve import ledger as ledgers
from studbook.evolve.queue import FAILED, QUEUED, RUNNING, STALE, SUCCESS, Queue, process_start
from studbook.evolve.space import SearchSpace

CODE = ("src", "stages", "conf", "tasks", "dvc.yaml", "params.yaml")


def say(key: str, value) -> None:
    print(f"{key}: {value}", flush=True)


class Search:
    """Paths and files of one search (`.dvc/tmp/evolve/NAME`)."""

    def __init__(self, name: str, repo: str | Path = "."):
        from studbook.repository.recipes import NAME_RE

        if not NAME_RE.match(name) or len(name) > 59:
            raise StudbookError(f"'{name}' is not a valid search name (lower-case letters, digits, "
                                "'-' or '_'; at most 59 characters)", key="search")
        self.name, self.repo = name, Path(repo).resolve()
        self.dir = self.repo / ".dvc" / "tmp" / "evolve" / name
        self.space_file, self.state_file = self.dir / "search.yaml", self.dir / "state.json"
        self.ledger, self.journal = self.dir / "ledger.jsonl", self.dir / "study.jsonl"
        self.work, self.promote = self.dir / "work", self.dir / "promote"
        self.profile_dir, self.profile_file = self.dir / "profile", self.dir / "profile.json"
        self.branch = f"evolve/{name}"

    @contextlib.contextmanager
    def locked(self):
        """One driver per search; the kernel drops the lock when the driver dies (kill -9)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "driver.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StudbookError(f"search '{self.name}' is already being driven",
                                    file=str(self.dir / "driver.lock")) from None
            stale = self.journal.with_name(self.journal.name + ".lock")
            if stale.exists():  # Optuna's own lock, left by a killed driver: ours is held
                stale.unlink()
            yield

    def rows(self) -> list[dict]:
        return ledgers.read_ledger(self.ledger)

    def row(self, kind: str, trial: int) -> dict | None:
        return next((r for r in self.rows() if (r["kind"], r["trial"]) == (kind, trial)), None)

    def put(self, row: dict) -> None:
        ledgers.upsert(self.ledger, row)


def check_committed(repo: Path) -> str:
    """The baseline: HEAD, with the code and configs that derive candidates committed."""
    from studbook.evolve.queue import _run

    changed = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE], repo)
    if changed.strip():
        raise StudbookError("commit first: a search breeds from the committed code and configs, "
                            f"and these differ from HEAD:\n{changed}")
    return _run(["git", "rev-parse", "HEAD"], repo).strip()


def reference_parents(space: SearchSpace) -> list[str]:
    """The parents a noise run re-breeds: each operator's parents (every choice)."""
    found: list[str] = []
    for operator in space.operators.values():
        parents = operator.parents
        for parent in (parents if isinstance(parents, list) else parents.choice):
            if parent not in found:
                found.append(str(parent))
    return found


def check_start(space: SearchSpace, file: str, repo: Path) -> None:
    """Before any compute: every parent a verified, promoted member under the space's
    contract; every primary task keeps enough confirmation items."""
    from studbook.repository.population import members
    from studbook.repository.verification import VERIFIED, verify_card
    from studbook.repository.recipes import compose_recipe

    cards = {m["name"]: m for m in members()}
    parents = reference_parents(space)
    for parent in parents:
        card = cards.get(parent)
        if card is None or card["verdict"] != "promoted":
            raise StudbookError(f"parent '{parent}' is not a promoted member (no card cards/{parent}.json "
                                "or not promoted)", file=file, key="operators")
        check = verify_card(card)
        if check.status != VERIFIED:
            raise StudbookError(f"parent '{parent}' is {check.status}: {check}", file=file, key="operators")
    contract = compose_recipe(Path("generations") / parents[0] / "recipe.yaml", "conf").recipe.contract
    if contract.evaluation.limit is not None:
        per_task = contract.evaluation.limit
    else:
        from studbook.evidence.records import read_evaluation

        samples = read_evaluation(Path("generations") / parents[0] / "eval")["samples"]
        per_task = min(len(samples[t]) for t in contract.primary.tasks)
    left = per_task - space.selection.items_per_task
    if left < space.selection.min_confirmation_items:
        raise StudbookError(f"{space.selection.items_per_task} selection items per task leave {left} "
                            f"to confirm on (at least {space.selection.min_confirmation_items} wanted)",
                            file=file, key="selection.items_per_task")


def worker_env(workers: int) -> dict:
    """The workers' runtime knobs: threads shared out, offline, this interpreter first."""
    import sys

    threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
    env = dict(os.environ)
    env.update({"STUDBOOK_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
                "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")})
    return env


def write_candidate(work: Path, name: str, proposal, space: SearchSpace, search: str, trial: int,
                    seed: int | None = None, scoped: bool = True) -> str:
    """The candidate's folder in the worktree (recipe, scope, dvc.yaml, a compute.json
    placeholder so the breed stage's wall time lands in the experiment commit); returns the
    recipe text. Raises StudbookError when `propose` refuses it. A finalist's twin is the
    same candidate with another `seed` and no scope (evaluated on every item)."""
    from studbook.repository.proposal import propose

    contract_primary = _primary_tasks(work, space.contract)
    with contextlib.chdir(work):
        propose(name, proposal.method, proposal.parents, space.seed if seed is None else seed, proposal.choices,
                conf_dir="conf", parameters=proposal.parameters, overrides=proposal.overrides,
                selection={"rule": f"search {search}, trial {trial} ({space.sampler.name}, seed "
                                   f"{space.sampler.seed})", "search": search, "trial": trial},
                scope={"search": search, "salt": search, "items_per_task": space.selection.items_per_task,
                       "tasks": contract_primary, "evaluate": "selection"} if scoped else None)
        # what the card shows if DVC's run cache restores breed (a candidate identical to one
        # bred before, in any search sharing this cache): nothing was computed for it
        Path("generations", name, "compute.json").write_text(json.dumps(
            {"seconds": 0.0, "host": "restored from DVC's run cache"}) + "\n")
        return Path("generations", name, "recipe.yaml").read_text()


def _primary_tasks(root: Path, contract: str) -> list[str]:
    from studbook.core.config import load_yaml

    return list(load_yaml(root / "conf" / "contract" / f"{contract}.yaml")["primary"]["tasks"])


def _error(log: str) -> str:
    """The line that says why a stage failed: studbook's `error: …`, else the exception a
    traceback ends with, else DVC's own last error."""
    import re

    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for pattern in (r"^error: ", r"^[\w.]*(Error|Exception|Interrupt)\b.*: ", r"^ERROR: "):
        found = [line for line in lines if re.match(pattern, line)]
        if found:
            return found[-1][:500]
    return (lines[-1] if lines else "no output")[:500]


def asked(study) -> int:
    """Trials asked so far (the space's enqueued first trials wait in the study until asked)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)


def measured_noise(repo: Path, search: str, noise: dict) -> dict | None:
    """A noise run another search already measured for the same parent (weights and
    recipe, as its baseline's card has them) and seed, whose experiment is still here:
    evidence a finished search leaves makes the next one cheaper (design R1). Returns the
    row to record (no timing: this search spent nothing on it), or None."""
    from studbook.repository.card_files import load_json

    for other, path in ledgers.ledgers(repo).items():
        if other == search:
            continue
        for row in ledgers.read_ledger(path):
            if not (row["kind"] == "noise" and row["status"] == "measured"
                    and row["noise"].get("of", "parent") == "parent"
                    and row["noise"]["parent"] == noise["parent"] and row["noise"]["seed"] == noise["seed"]):
                continue
            shown = subprocess.run(["git", "show", f"{row['experiment']['baseline']}:cards/{noise['parent']}.json"],
                                   cwd=repo, capture_output=True, text=True)
            kept = subprocess.run(["git", "cat-file", "-e", row["experiment"]["commit"] + "^{commit}"],
                                  cwd=repo, capture_output=True)
            if shown.returncode or kept.returncode:
                continue
            card = load_json(shown.stdout, f"cards/{noise['parent']}.json")
            if (card["weights_sha256"], card["recipe_sha256"]) == (noise["parent_sha256"],
                                                                   noise["parent_recipe_sha256"]):
                return {**row, "noise": {**noise, **row["noise"]}, "timing": None,
                        "reused_from": row.get("reused_from") or other}
    return None


class Driver:
    def __init__(self, search: Search, space: SearchSpace, state: dict, promote: bool = True,
                 profile: bool = False):
        self.search, self.space, self.state = search, space, state
        self.queue = Queue(search.repo, search.work, state["baseline"])
        self.env = worker_env(space.budget.workers)
        if profile:  # a runtime knob: every worker process times itself (evolve/profile.py)
            search.profile_dir.mkdir(parents=True, exist_ok=True)
            hook = str(Path(__file__).resolve().parent / "profiling")
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [hook, self.env.get("PYTHONPATH")]))
            self.env["STUDBOOK_PROFILE_DIR"] = str(search.profile_dir)
        self.promote = promote
        self.prepared = False  # finalists widened while a noise run still ran
        self.twins_queued = False
        self.prepare_thread, self.prepare_error = None, None

    # --- one candidate ---------------------------------------------------------------
    def ask_one(self, study) -> None:
        from studbook.evolve.study import ask

        trial, proposal = ask(study, self.space, self.search.work / "conf")
        self._queue_trial(study, trial.number, proposal, attempts=1)

    def _queue_trial(self, study, number: int, proposal, attempts: int, again: bool = False) -> None:
        from studbook.evolve.study import tell

        name = f"{self.search.name}-{number:03d}"
        row = {"kind": "candidate", "trial": number, "name": name, "status": "proposed",
               "operator": proposal.method, "parents": proposal.parents, "params": proposal.params,
               "attempts": attempts, "sampler": {"name": self.space.sampler.name, "seed": self.space.sampler.seed,
                                                 "asked_after": self._finished_trials()}}
        self.search.put(row)
        try:
            row["recipe"] = write_candidate(self.search.work, name, proposal, self.space, self.search.name, number)
        except StudbookError as exc:
            self.search.put({**row, "status": "invalid", "error": str(exc)})
            tell(study, number, None)
            say("invalid", f"{name}: {exc}")
            return
        import hashlib

        row["recipe_sha256"] = hashlib.sha256(row["recipe"].encode()).hexdigest()
        row["task"] = self.queue.queue_candidate(name, again=again or attempts > 1)
        self.search.put({**row, "status": "queued"})
        say("queued", f"{name} ({proposal.method} from {', '.join(proposal.parents)}; "
                      + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in sorted(proposal.params.items()) if k != "operator") + ")")

    def _finished_trials(self) -> list[int]:
        return sorted(r["trial"] for r in self.search.rows()
                      if r["kind"] == "candidate" and r["status"] in ledgers.FINAL + ("selected",))

    def queue_noise(self) -> None:
        """`noise.rerun: parent`: each reference parent re-bred with another seed, queued first
        (or reused from another search)."""
        from studbook.core.config import load_yaml
        from studbook.repository.card_files import load_json

        if self.space.noise.rerun != "parent":
            return
        for index, parent in enumerate(reference_parents(self.space)):
            earlier = self.search.row("noise", index)
            if earlier is not None and earlier["status"] != "proposed":  # (proposed: killed while queueing)
                continue
            seed = int(load_yaml(self.search.work / "generations" / parent / "recipe.yaml")["seed"]) \
                + self.space.noise.seed_offset
            card = load_json((self.search.work / "cards" / f"{parent}.json").read_text(), f"cards/{parent}.json")
            noise = {"of": "parent", "parent": parent, "rebred": parent, "seed": seed,
                     "parent_sha256": card["weights_sha256"], "parent_recipe_sha256": card["recipe_sha256"]}
            reused = measured_noise(self.search.repo, self.search.name, noise)
            if reused is not None:
                self.search.put(reused | {"trial": index})
                say("reused", f"{reused['name']} ({parent} re-bred with seed {seed}, measured by search "
                              f"{reused['reused_from']}: this noise floor costs nothing)")
                continue
            name = f"{self.search.name}-noise-{parent}"
            row = {"kind": "noise", "trial": index, "name": name, "status": "proposed", "parents": [parent],
                   "noise": noise, "attempts": 1}
            self.search.put(row)
            row["task"] = self.queue.queue_noise(name, parent, seed, again=earlier is not None)
            self.search.put({**row, "status": "queued"})
            say("queued", f"{name} ({parent} re-bred with seed {seed}: the noise floor)")

    def queue_twins(self) -> int:
        """`noise.rerun: finalist`: once every candidate is done, each finalist re-bred with
        another seed (its twin) and evaluated on every item; returns how many were queued."""
        from studbook.evolve import promotion

        self.twins_queued = True
        queued = 0
        for row in promotion.finalists(self.search, self.space):
            earlier = self.search.row("noise", row["trial"])
            if earlier is not None and earlier["status"] != "proposed":  # (proposed: killed while queueing)
                continue
            seed = self.space.seed + self.space.noise.seed_offset
            name = f"{row['name']}-twin"
            twin = {"kind": "noise", "trial": row["trial"], "name": name, "status": "proposed",
                    "parents": [row["reference_parent"]], "attempts": 1,
                    "noise": {"of": "finalist", "parent": row["reference_parent"], "rebred": row["name"],
                              "seed": seed}}
            self.search.put(twin)
            twin["task"] = self._queue_noise_row(twin, again=earlier is not None)
            self.search.put({**twin, "status": "queued"})
            say("queued", f"{name} ({row['name']} re-bred with seed {seed}: its noise floor)")
            queued += 1
        return queued

    def _queue_noise_row(self, row: dict, again: bool = False) -> str:
        noise = row["noise"]
        if noise.get("of", "parent") == "finalist":  # the finalist's own proposal, another seed, no scope
            finalist = self.search.row("candidate", row["trial"])
            write_candidate(self.search.work, finalist["name"], self._again(finalist["params"]), self.space,
                            self.search.name, row["trial"], seed=noise["seed"], scoped=False)
            return self.queue.queue_candidate(row["name"], folder=finalist["name"], again=again)
        return self.queue.queue_noise(row["name"], noise["parent"], noise["seed"], again=again)

    # --- watching ----------------------------------------------------------------------
    def poll(self, study) -> int:
        """Advance every in-flight row; returns how many are still in flight."""
        from studbook.evolve.study import tell

        flying = 0
        now = time.time()
        for row in self.search.rows():
            if row["status"] not in ("queued", "running", "killing") or "task" not in row:
                continue
            state = self.queue.state(row["task"], row["name"])
            if state.state in (STALE, FAILED) and self.queue.experiment_ref(row["name"]):
                # its experiment exists (made by a task queued before a kill): it finished
                state = dataclasses.replace(state, state=SUCCESS)
            if state.state == QUEUED:
                flying += 1
            elif state.state == RUNNING:
                flying += 1
                # the executor's own start (the driver may first see it late: busy confirming,
                # or resumed), else now
                timing = row.get("timing") or {"started": process_start(state.pid) or now}
                if row["status"] == "queued":
                    self.search.put({**row, "status": "running", "timing": timing})
                    say("running", row["name"])
                elif row["status"] == "running" and now - timing["started"] > self._cap(row):
                    self.search.put({**row, "status": "killing"})
                    say("killing", f"{row['name']} ran {now - timing['started']:.0f} s, over its cap "
                                   f"{self._cap(row):.0f} s")
                    self.queue.kill(row["task"])
            elif state.state == STALE:  # its worker died (kill -9): never finished, run it again
                self.queue.clear_stale(row["task"])
                self._requeue(study, row)
                flying += 1
            elif state.state == SUCCESS:
                self._collect(study, row, state)
            elif state.state == FAILED:
                timing = self._timing(row, state, now)
                status = "timed-out" if row["status"] == "killing" else "crashed"
                error = (f"over the cap of {self._cap(row):.0f} s" if status == "timed-out"
                         else "it finished, but DVC never collected its experiment (no ref)"
                         if state.returncode == 0 else _error(self.queue.log_tail(row["task"], 60)))
                self.search.put({**row, "status": status, "timing": timing, "error": error,
                                 "log_tail": self.queue.log_tail(row["task"], 15)})
                if row["kind"] == "candidate":
                    tell(study, row["trial"], None)
                say(status, f"{row['name']}: {error}")
        return flying

    @staticmethod
    def _timing(row: dict, state, now: float) -> dict:
        started = (row.get("timing") or {}).get("started")
        finished = state.finished or now
        if started is None:  # started and ended while no driver ran: its wall time is unknown
            return {"started": None, "finished": finished}
        return {"started": started, "finished": finished, "wall_seconds": max(0.0, finished - started)}

    def _cap(self, row: dict) -> float:
        # the noise run re-breeds a founder: its cap is the whole search's wall budget
        return self.space.budget.candidate_seconds if row["kind"] == "candidate" else self.space.budget.wall_seconds

    def _again(self, params: dict):
        """The proposal a trial's recorded parameters make (the same candidate, re-queued)."""
        from optuna.trial import FixedTrial

        from studbook.evolve.space import suggest

        return suggest(FixedTrial(params), self.space, self.search.work / "conf")

    def _requeue(self, study, row: dict) -> None:
        say("requeue", f"{row['name']} (its worker died; attempt {row.get('attempts', 1) + 1})")
        if row["kind"] == "noise":
            task = self._queue_noise_row(row, again=True)
            self.search.put({**row, "status": "queued", "task": task, "timing": None,
                             "attempts": row.get("attempts", 1) + 1})
            return
        self._queue_trial(study, row["trial"], self._again(row["params"]), attempts=row.get("attempts", 1) + 1)

    def _collect(self, study, row: dict, state) -> None:
        from studbook.evolve.study import tell
        from studbook.repository.card_files import load_json

        commit = self.queue.experiment_ref(row["name"])
        timing = self._timing(row, state, time.time())
        experiment = {"name": row["name"], "commit": commit, "baseline": self.state["baseline"]}
        folder = row["name"] if row["kind"] == "candidate" else row["noise"].get("rebred", row["noise"]["parent"])
        compute = load_json(self.queue.show(commit, f"generations/{folder}/compute.json"), "compute.json")
        timing["train_seconds"] = float(compute.get("seconds") or 0.0)
        if timing.get("wall_seconds"):
            timing["not_training_share"] = 1 - timing["train_seconds"] / timing["wall_seconds"]
        verdict = load_json(self.queue.show(commit, f"generations/{folder}/verdict.json"), "verdict.json")
        card = load_json(self.queue.show(commit, f"cards/{folder}.json"), "card")
        figures = {k: card["compute"][k] for k in ("steps", "tokens", "flops") if k in card["compute"]}
        net = verdict["primary"]["net_gain"]
        if row["kind"] == "noise":
            self.search.put({**row, "status": "measured", "experiment": experiment, "timing": timing,
                             "compute": figures, "noise": {**row["noise"],
                                                           "weights_sha256": card["weights_sha256"]}})
            say("measured", f"{row['name']} in {timing.get('wall_seconds', 0):.0f} s")
            return
        selection = {"items": net["n_items"], "net_gain": net["mean"], "ci_low": net["ci_low"],
                     "ci_high": net["ci_high"], "p_value": net["p_value"], "verdict": verdict["verdict"],
                     "reasons": verdict["reasons"]}
        passed = verdict["verdict"] == "promoted"
        self.search.put({**row, "status": "selected" if passed else "rejected",
                         "decided_at": None if passed else "selection",
                         "reference_parent": verdict["reference_parent"], "experiment": experiment,
                         "selection": selection, "objectives": [net["mean"]], "compute": figures,
                         "timing": timing})
        tell(study, row["trial"], net["mean"])
        say("selected" if passed else "rejected",
            f"{row['name']} selection gain {net['mean']:+.4f} [{net['ci_low']:+.4f}, {net['ci_high']:+.4f}] "
            f"in {timing.get('wall_seconds', 0):.0f} s ({timing['train_seconds']:.1f} s training)")

    # --- the loop ----------------------------------------------------------------------
    def resume_asked(self, study) -> None:
        """Trials asked before a kill: a trial with no row, or a row killed before queueing,
        is queued again from its parameters (the same candidate)."""
        from optuna.trial import TrialState

        rows = {r["trial"]: r for r in self.search.rows() if r["kind"] == "candidate"}
        for trial in study.trials:
            row = rows.get(trial.number)
            if trial.state == TrialState.RUNNING and (row is None or row["status"] == "proposed"):
                say("requeue", f"{self.search.name}-{trial.number:03d} (asked before the driver stopped)")
                self.queue.ensure_worktree()
                self._queue_trial(study, trial.number, self._again(trial.params), attempts=1, again=True)

    def run(self) -> None:
        from studbook.evolve.study import open_study

        search, budget = self.search, self.space.budget
        study = open_study(search.journal, self.space, search.name)
        self.queue.ensure_worktree()
        self.resume_asked(study)
        self.queue_noise()
        while True:
            flying = self.poll(study)
            candidates = [r for r in search.rows() if r["kind"] == "candidate"]
            in_flight = sum(1 for r in candidates if r["status"] in ledgers.IN_FLIGHT)
            while (in_flight < budget.workers + 1 and asked(study) < budget.candidates
                   and self._wall_allows()):
                self.ask_one(study)
                in_flight += 1
                flying += 1
            done = in_flight == 0 and (asked(study) >= budget.candidates or not self._wall_allows())
            if done and self.promote and self.space.noise.rerun == "finalist" and not self.twins_queued:
                flying += self.queue_twins()
            if flying:
                self.queue.ensure_workers(budget.workers, self.env)
            elif done:
                break
            if done and self.promote and not self.prepared:
                self._prepare(candidates)
            time.sleep(1.0)

    def _prepare(self, candidates: list[dict]) -> None:
        """Every candidate is done but a noise run is not: evaluate the finalists fully now,
        on the cores the candidates no longer use, in a thread, so the loop keeps polling
        (the noise run's times stay exact). The thread runs commands and writes no ledger row:
        the finalists are chosen (and the others ranked out) here, first."""
        import threading

        from studbook.evolve import promotion

        self.prepared = True
        if not any(r["status"] == "selected" for r in candidates):
            return
        chosen = promotion.finalists(self.search, self.space)
        busy = sum(1 for r in self.search.rows() if r["status"] in ledgers.IN_FLIGHT)
        cores = len(os.sched_getaffinity(0))
        threads = str(max(1, cores - busy * max(1, cores // self.space.budget.workers)))

        def work() -> None:
            try:
                promotion.prepare(self.search, chosen, self.state, threads)
            except BaseException as exc:  # re-raised by finish_prepare, in the driver's thread
                self.prepare_error = exc

        self.prepare_thread = threading.Thread(target=work, name="prepare", daemon=True)
        self.prepare_thread.start()

    def finish_prepare(self) -> None:
        if self.prepare_thread is not None:
            self.prepare_thread.join()
        if self.prepare_error is not None:
            raise self.prepare_error

    def _wall_allows(self) -> bool:
        walls = [r["timing"]["wall_seconds"] for r in self.search.rows()
                 if r["kind"] == "candidate" and (r.get("timing") or {}).get("wall_seconds")]
        expected = statistics.median(walls) if walls else self.space.budget.candidate_seconds
        return time.time() - self.state["started"] + expected <= self.space.budget.wall_seconds


def _write_profile(search: Search) -> None:
    """searches/SEARCH/profile.json: each candidate's wall time split into its parts."""
    from studbook.core.atomic import write_json_atomic
    from studbook.evolve import profile

    parts = profile.breakdown(search.rows(), search.profile_dir)
    figures = profile.medians(parts)
    write_json_atomic(search.profile_file, {"median": figures, "candidates": parts})
    for key, value in figures.items():
        say(f"profile_{key}", f"{value:.1%}" if key.endswith("_share") else f"{value:.1f} s")


def evolve(name: str, space_name: str | None = None, budget: dict | None = None,
           promote: bool = True, repo: str | Path = ".", profile: bool = False) -> dict:
    """Start or resume search `name`; returns its summary."""
    from studbook.evolve import promotion
    from studbook.evolve.space import load_space
    from studbook.core.config import validate

    search = Search(name, repo)
    with search.locked():
        if search.state_file.is_file():
            state = json.loads(search.state_file.read_text())
            space = validate(SearchSpace, yaml.safe_load(search.space_file.read_text()), str(search.space_file))
            say("resume", f"{name} from {state['baseline'][:12]}, {len(search.rows())} ledger row(s)")
        else:
            if space_name is None:
                raise StudbookError(f"no search '{name}' yet: name its space with --space", key="space")
            file = search.repo / "conf" / "search" / f"{space_name}.yaml"
            if not file.is_file():
                raise StudbookError(f"no search space '{space_name}'", file=str(file))
            baseline = check_committed(search.repo)
            space = load_space(file)
            if budget:
                space = space.model_copy(update={"budget": space.budget.model_copy(
                    update={k: v for k, v in budget.items() if v is not None})})
            check_start(space, str(file), search.repo)
            from studbook.core.atomic import write_json_atomic, write_text_atomic

            write_text_atomic(search.space_file, f"# search {name}: the space as frozen at its start\n"
                              + yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False))
            state = {"baseline": baseline, "started": time.time(), "space": space_name}
            write_json_atomic(search.state_file, state)
            say("search", f"{name} from {baseline[:12]}: {space.budget.candidates} candidates, "
                          f"{space.budget.workers} workers, cap {space.budget.candidate_seconds:.0f} s")
        driver = Driver(search, space, state, promote, profile)
        driver.run()
        driver.finish_prepare()
        driver.queue.stop_workers()
        if search.profile_dir.is_dir():
            _write_profile(search)
        if promote:
            promotion.promote(search, space, state, prepared=driver.prepared)
            promotion.finish(search)  # the branch, the experiments and the live state stay
        summary = ledgers.summary(search.rows())
        for key, value in summary.items():
            say(key, value)
        return summary
