"""The end of a search: finalists confirmed on items they were not picked on, winners committed.

The best candidates by selection gain (`confirm.finalists` of them) are each applied in a
second worktree on branch `evolve/SEARCH` (from the baseline, sharing the DVC cache): its
scope widened to every item (`scope.yaml: evaluate: all`), the noise run's per-item scores
written to `selection.json`, and `dvc repro` re-runs evaluate and record (breed is up to
date: the weights come from the experiment through the cache). The record stage's gate
(`evidence.selection.confirm`) decides: promoted finalists are one commit each on the
branch; the search's space, study, ledger and README are the last commit. Nothing is
pushed or merged: the branch is ready for a pull request whose card diff shows the winners.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from studbook.core.errors import StudbookError
from studbook.evolve import ledger as ledgers
from studbook.evolve.queue import _run, dvc, share_cache


def say(key: str, value) -> None:
    print(f"{key}: {value}", flush=True)


def _studbook(*args: str) -> list[str]:
    return [sys.executable, "-m", "studbook.cli", *args]


def ensure_branch_worktree(search, baseline: str) -> Path:
    """The promotion worktree on branch evolve/SEARCH, outputs of the baseline checked out."""
    work = search.promote
    if not (work / ".git").exists():
        _run(["git", "worktree", "prune"], search.repo)
        exists = _run(["git", "branch", "--list", search.branch], search.repo).strip()
        _run(["git", "worktree", "add", "-q", str(work), search.branch] if exists else
             ["git", "worktree", "add", "-q", "-b", search.branch, str(work), baseline], search.repo)
        share_cache(search.repo, work)
    _run(["git", "reset", "-q", "--hard"], work)  # a confirmation a kill interrupted
    _run(["git", "clean", "-qfd", "generations", "cards", "hard_examples", "searches"], work)
    _run(dvc("checkout", "-q"), work, check=False)  # parents' weights and evaluations
    return work


def noise_record(work: Path, search: str, contract: str, row: dict, candidates: list[dict],
                 finalists: int, rank: int, noise: dict, sampler: str) -> dict:
    """generations/NAME/selection.json: the search's provenance and the noise run's per-item
    primary scores, read from its experiment through the cache."""
    import dvc.api

    from studbook.core.config import load_yaml

    parent = row["reference_parent"]
    rebred = noise["noise"].get("rebred", noise["noise"]["parent"])
    commit = noise["experiment"]["commit"]
    primary = load_yaml(work / "conf" / "contract" / f"{contract}.yaml")["primary"]
    scores: dict[str, dict[str, float]] = {}
    for task in primary["tasks"]:
        text = dvc.api.read(f"generations/{rebred}/eval/samples/{task}.jsonl", repo=str(work), rev=commit)
        scores[task] = {item["id"]: item[primary["metric"]] for item in map(json.loads, text.splitlines())}
    card = json.loads((work / "cards" / f"{parent}.json").read_text())
    return {"search": search, "trial": row["trial"], "candidates": len(candidates),
            "finalists": finalists, "rank": rank, "sampler": sampler,
            "noise": {"of": noise["noise"].get("of", "parent"), "parent": parent,
                      "parent_sha256": card["weights_sha256"], "seed": noise["noise"]["seed"],
                      "experiment": commit, "weights_sha256": noise["noise"]["weights_sha256"],
                      "scores": scores}}


def widen(work: Path, row: dict, threads: str) -> None:
    """Apply candidate `row` in the promotion worktree, widen its scope to every item and
    run its evaluate stage. Needs no noise run, so it overlaps the noise run's tail."""
    name, commit = row["name"], row["experiment"]["commit"]
    scope = work / "generations" / name / "scope.yaml"
    if not scope.is_file() or "evaluate: selection" in scope.read_text():
        _run(["git", "checkout", commit, "--", f"generations/{name}", f"cards/{name}.md", f"cards/{name}.json"],
             work)
        _run(["git", "reset", "-q"], work)
        _run(dvc("checkout", "-q", f"generations/{name}/dvc.yaml"), work)
        scope.write_text(scope.read_text().replace("evaluate: selection", "evaluate: all"))
    env = _threads_env(threads)
    _run(_studbook("refresh", name), work, env=env)
    say("confirming", f"{name}: evaluating every item ({threads} thread(s))")
    out = _run(dvc("repro", f"generations/{name}/dvc.yaml:evaluate"), work, env=env)
    if "Running stage 'generations/" + name + "/dvc.yaml:breed'" in out:
        raise StudbookError(f"confirming {name} re-bred it: its experiment's outputs were not in the cache")


def confirm_one(work: Path, row: dict, record: dict, threads: str) -> dict:
    """Finish the confirmation of a widened finalist: the noise run's scores into
    selection.json, then record (its gate decides); returns the verdict."""
    from studbook.core.atomic import write_json_atomic

    name = row["name"]
    widen(work, row, threads)  # a no-op when the evaluation already ran
    write_json_atomic(work / "generations" / name / "selection.json", record)
    env = _threads_env(threads)
    _run(_studbook("refresh", name), work, env=env)
    _run(dvc("repro", f"generations/{name}/dvc.yaml"), work, env=env)
    return json.loads((work / "generations" / name / "verdict.json").read_text())


def _threads_env(threads: str) -> dict:
    return {**os.environ, "STUDBOOK_THREADS": threads, "OMP_NUM_THREADS": threads}


def finalists(search, space) -> list[dict]:
    """The selected candidates best by selection gain, `confirm.finalists` of them; the
    others are rejected at ranking (idempotent)."""
    rows = search.rows()
    selected = sorted((r for r in rows if r["kind"] == "candidate" and r["status"] == "selected"),
                      key=lambda r: (-r["selection"]["net_gain"], r["trial"]))
    ranked = [r for r in rows if r.get("decided_at") == "ranking"]
    for place, row in enumerate(selected[space.confirm.finalists:], start=space.confirm.finalists + 1):
        search.put({**row, "status": "rejected", "decided_at": "ranking",
                    "error": f"passed selection, ranked {place} of {len(selected) + len(ranked)}; "
                             f"finalists: {space.confirm.finalists}"})
    return selected[:space.confirm.finalists]


def prepare(search, chosen: list[dict], state: dict, threads: str) -> None:
    """While the noise run still runs: widen and evaluate every finalist (section 7.3 of the
    design: the finalists' full evaluation overlaps the noise run). Writes no ledger row."""
    work = ensure_branch_worktree(search, state["baseline"])
    done = _run(["git", "log", "--format=%s", f"{state['baseline']}..{search.branch}"], work)
    for row in chosen:
        if f"{row['name']}: promoted by search" not in done:
            widen(work, row, threads)


def noise_run(rows: list[dict], finalist: dict, rerun: str) -> dict | None:
    """The measured noise run a finalist is confirmed against: its twin, or its reference
    parent's re-breed."""
    for r in rows:
        if r["kind"] != "noise" or r["status"] != "measured" or r["noise"].get("of", "parent") != rerun:
            continue
        if (r["noise"].get("rebred") == finalist["name"] if rerun == "finalist"
                else r["noise"]["parent"] == finalist["reference_parent"]):
            return r
    return None


def promote(search, space, state: dict, prepared: bool = False) -> None:
    chosen = finalists(search, space)
    rows = search.rows()
    candidates = [r for r in rows if r["kind"] == "candidate"]
    work = search.promote if prepared else ensure_branch_worktree(search, state["baseline"])
    threads = str(max(1, len(os.sched_getaffinity(0))))  # the workers are stopped by now
    done = _run(["git", "log", "--format=%s", f"{state['baseline']}..{search.branch}"], work)
    for rank, row in enumerate(chosen, start=1):
        name = row["name"]
        noise = noise_run(rows, row, space.noise.rerun)
        if noise is None:
            search.put({**row, "status": "rejected", "decided_at": "confirmation",
                        "error": "no noise run measured: the noise floor is unknown"})
            continue
        record = noise_record(work, search.name, space.contract, row, candidates, len(chosen), rank, noise,
                              f"{space.sampler.name}, seed {space.sampler.seed}")
        if f"{name}: promoted by search" not in done:
            verdict = confirm_one(work, row, record, threads)
        else:  # committed before a kill: read what was committed
            verdict = json.loads((work / "generations" / name / "verdict.json").read_text())
        block = verdict["selection"]
        confirmation = {**{k: block["confirmation"][k] for k in ("mean", "ci_low", "ci_high", "p_value",
                                                                  "n_items", "confidence")},
                        "noise_floor": block["noise"]["floor"], "verdict": verdict["verdict"],
                        "reasons": verdict["reasons"]}
        if verdict["verdict"] == "promoted":
            if f"{name}: promoted by search" not in done:
                _run(["git", "add", "-A", f"generations/{name}", f"cards/{name}.md", f"cards/{name}.json",
                      "hard_examples"], work)
                _run(["git", "commit", "-qm",
                      f"{name}: promoted by search {search.name} (trial {row['trial']}): confirmed "
                      f"{block['confirmation']['mean']:+.4f} over {verdict['reference_parent']}, noise floor "
                      f"{block['noise']['floor']:.4f}"], work)
            confirmation["commit"] = _run(["git", "rev-parse", "HEAD"], work).strip()
            search.put({**row, "status": "promoted", "decided_at": "confirmation", "confirmation": confirmation})
            say("promoted", f"{name}: confirmed {block['confirmation']['mean']:+.4f} "
                            f"[{block['confirmation']['ci_low']:+.4f}, {block['confirmation']['ci_high']:+.4f}], "
                            f"noise floor {block['noise']['floor']:.4f}")
        else:
            _run(["git", "reset", "-q", "--hard"], work)
            _run(["git", "clean", "-qfd", f"generations/{name}", f"cards/{name}.md", f"cards/{name}.json",
                  "hard_examples"], work)  # other finalists' widened files stay
            search.put({**row, "status": "rejected", "decided_at": "confirmation", "confirmation": confirmation})
            say("rejected", f"{name} at confirmation: {'; '.join(verdict['reasons'])}")
    commit_search(search, work)


def commit_search(search, work: Path) -> None:
    """searches/SEARCH/: the frozen space, the study, the ledger and its README, one commit."""
    from studbook.core.atomic import write_text_atomic

    folder = work / "searches" / search.name
    folder.mkdir(parents=True, exist_ok=True)
    rows = search.rows()
    for source, target in ((search.space_file, "search.yaml"), (search.journal, "study.jsonl"),
                           (search.ledger, "ledger.jsonl"), (search.profile_file, "profile.json")):
        if source.is_file():  # profile.json only with --profile
            write_text_atomic(folder / target, source.read_text())
    write_text_atomic(folder / "README.md", ledgers.markdown(search.name, rows))
    _run(["git", "add", "-A", f"searches/{search.name}"], work)
    if _run(["git", "status", "--porcelain", f"searches/{search.name}"], work).strip():
        summary = ledgers.summary(rows)
        _run(["git", "commit", "-qm", f"search {search.name}: {summary['candidates']} candidates, "
              f"{summary['statuses'].get('promoted', 0)} promoted (ledger, study, space)"], work)
    say("branch", f"{search.branch} at {_run(['git', 'rev-parse', '--short', 'HEAD'], work).strip()}")
    say("next", f"git push -u origin {search.branch}; studbook card diff HEAD {search.branch}")


def finish(search) -> None:
    """Remove both worktrees (the branch and every experiment ref stay)."""
    for work in (search.work, search.promote):
        if (work / ".git").exists():
            _run(["git", "worktree", "remove", "--force", str(work)], search.repo, check=False)
    _run(["git", "worktree", "prune"], search.repo, check=False)
