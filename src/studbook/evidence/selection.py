"""Selection and confirmation: a search that picks the best of N must not grade itself.

`studbook evolve` ranks many candidates; the best of N on the items it was picked on is
optimistic (the winner's curse). So a search divides each split task's held-out items
once, by a salted hash of the item id: candidates are evaluated on the *selection* items
only (a fraction of the cost); a finalist is evaluated on everything and gated on the
*confirmation* items alone, at a Bonferroni-corrected confidence, and its confirmed gain
must also exceed the *noise floor* — the gain of its reference parent re-bred with another
seed over itself, on the same items.

Two files of a generation carry this (a generation without them is gated as always):
`generations/NAME/scope.yaml` (params of evaluate and record: which items score it) and
`generations/NAME/selection.json` (a dep of record, written at promotion: the search's
provenance and the noise run's per-item scores, so the floor is computed from data and
`repository.verification` can compute it again). `verdict()` is the record stage's gate;
verification calls the same function.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from studbook.evidence.gate import Scores, _signed, decide, paired_bootstrap


class Scope(BaseModel):
    """generations/NAME/scope.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    search: str
    salt: str
    items_per_task: int = Field(gt=0, description="selection items per split task")
    tasks: list[str] = Field(min_length=1, description="the split tasks (the primary ones)")
    evaluate: Literal["selection", "all"]


class NoiseRun(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    of: Literal["parent", "finalist"] = Field(
        default="parent", description="what was re-bred with another seed: the reference parent (the "
        "floor is its seed-to-seed difference) or this finalist (its twin: the floor is how far the "
        "finalist's own gain moves with the seed)")
    parent: str = Field(description="the reference parent")
    parent_sha256: str
    seed: int
    experiment: str = Field(description="the DVC experiment commit of the re-breed")
    weights_sha256: str
    scores: dict[str, dict[str, float]] = Field(description="task -> item id -> primary metric")


class SelectionRecord(BaseModel):
    """generations/NAME/selection.json: how the search picked this generation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    search: str
    trial: int = Field(ge=0)
    candidates: int = Field(ge=1, description="candidates the search evaluated")
    finalists: int = Field(ge=1, description="candidates confirmed (the Bonferroni factor)")
    rank: int = Field(ge=1)
    sampler: str
    noise: NoiseRun


def scope_file(name: str) -> Path:
    # beside the recipe; not a GenerationPaths field, which every stage's closure holds
    return Path("generations") / name / "scope.yaml"


def selection_file(name: str) -> Path:
    return Path("generations") / name / "selection.json"


def read_scope(name: str, root: str | Path = ".") -> Scope | None:
    from studbook.core.config import load_yaml, validate

    path = Path(root) / scope_file(name)
    if not path.is_file():
        return None
    return validate(Scope, load_yaml(path) or {}, str(scope_file(name)))


def read_selection(name: str, root: str | Path = ".") -> SelectionRecord | None:
    from studbook.core.config import validate
    from studbook.repository.card_files import load_json

    path = Path(root) / selection_file(name)
    if not path.is_file():
        return None
    data = load_json(path.read_bytes(), str(selection_file(name)), what="selection record")
    return validate(SelectionRecord, data, str(selection_file(name)))


def split(task: str, ids: list[str], salt: str, k: int) -> tuple[list[str], list[str]]:
    """(selection, confirmation) ids, each in the given order: the k ids with the smallest
    sha256(salt, task, id). Depends on the ids only, never on their order or on scores."""
    def key(item: str) -> str:
        return hashlib.sha256(f"{salt}\0{task}\0{item}".encode()).hexdigest()

    chosen = set(sorted(ids, key=key)[:k])
    return [i for i in ids if i in chosen], [i for i in ids if i not in chosen]


def selection_ids(scope: Scope, task: str, ids: list[str]) -> list[str]:
    return split(task, ids, scope.salt, scope.items_per_task)[0]


def restrict(scores: Scores, ids: dict[str, list[str]]) -> Scores:
    """Only the listed items of the listed tasks; other tasks whole."""
    return Scores(scores.name, scores.sha256, {
        task: ({i: rows[i] for i in ids[task] if i in rows} if task in ids else rows)
        for task, rows in scores.items.items()})


def scoped_contract(contract, tasks: list[str]):
    """The contract a selection-scoped candidate is gated under: only the split tasks are
    evaluated, so benchmarks and guards on other tasks wait for the confirmation."""
    keep = set(tasks)
    primary = [t for t in contract.primary.tasks if t in keep]
    return contract.model_copy(update={
        "benchmarks": [b for b in contract.benchmarks if b.task in keep],
        "primary": contract.primary.model_copy(update={"tasks": primary}),
        "guarded": [g for g in contract.guarded if g.task in keep],
        "harvest": None})


def selecting(scope: Scope | None) -> bool:
    """A candidate of a running search: scored on its selection items only."""
    return scope is not None and scope.evaluate == "selection"


def in_scope(contract, scope: Scope | None):
    """The contract as far as the generation's evaluation reaches."""
    return scoped_contract(contract, scope.tasks) if selecting(scope) else contract


def evaluated_tasks(contract, scope: Scope | None) -> list[str]:
    """What the evaluate stage scores: the scope's split tasks, or everything."""
    if selecting(scope):
        return list(scope.tasks)
    return [b.task for b in contract.benchmarks] + (contract.harvest.tasks if contract.harvest else [])


def chooser(scope: Scope | None):
    """`keep(task, ids)` for `evaluation.evaluate_model`: the selection items, or None (all)."""
    if not selecting(scope):
        return None
    return lambda task, ids: selection_ids(scope, task, ids)


def _figures(stats: dict) -> dict:
    return {k: stats[k] for k in ("mean", "ci_low", "ci_high", "p_value", "n_items")}


def verdict(name: str, child: Scores, parents: list[Scores], contract, root: str | Path = ".") -> dict:
    """The record stage's gate for generation `name`: `gate.decide`, scoped by its search."""
    scope = read_scope(name, root)
    if scope is None:
        return decide(child, parents, contract)
    if selecting(scope):
        decided = decide(child, parents, in_scope(contract, scope))
        decided["selection"] = {"search": scope.search, "stage": "selection",
                                "tasks": list(scope.tasks), "items_per_task": scope.items_per_task}
        return decided
    record = read_selection(name, root)
    if record is None:
        from studbook.core.errors import StudbookError

        raise StudbookError("scope says 'evaluate: all' (a finalist) but there is no selection "
                            "record", file=str(selection_file(name)))
    return confirm(child, parents, contract, scope, record)


def confirm(child: Scores, parents: list[Scores], contract, scope: Scope,
            record: SelectionRecord) -> dict:
    """A finalist's verdict: the gate on the confirmation items at confidence
    1 − (1 − c)/finalists, promoted only when the confirmed mean gain also exceeds the
    noise floor; the selection figures kept beside it."""
    chosen = {t: selection_ids(scope, t, sorted(child.items[t])) for t in scope.tasks}
    held = {t: [i for i in sorted(child.items[t]) if i not in set(chosen[t])] for t in scope.tasks}
    gate = contract.gate
    picked = decide(restrict(child, chosen), parents, scoped_contract(contract, scope.tasks))
    strict = contract.model_copy(update={"gate": gate.model_copy(
        update={"confidence": 1 - (1 - gate.confidence) / record.finalists})})
    decided = decide(restrict(child, held), parents, strict)
    # the card's benchmark deltas compare the child's lm-eval figures (all items) like with like
    decided["parent_benchmarks"] = decide(child, parents, contract)["parent_benchmarks"]
    primary = contract.primary
    noise = record.noise
    reference = child if noise.of == "finalist" else {p.name: p for p in parents}.get(noise.parent)
    if reference is None:
        raise ValueError(f"the noise run re-bred {noise.parent}, which is not a parent")
    ids = {t: held[t] for t in primary.tasks}
    missing = [(t, i) for t in primary.tasks for i in ids[t] if i not in noise.scores.get(t, {})]
    if missing:
        raise ValueError(f"the noise run has no score on {len(missing)} confirmation item(s), "
                         f"first {missing[0][0]}/{missing[0][1]}")
    again = np.concatenate([[noise.scores[t][i] for i in ids[t]] for t in primary.tasks])
    base = np.concatenate([reference.vector(t, primary.metric, ids[t]) for t in primary.tasks])
    floor_stats = paired_bootstrap(_signed(again - base, primary.direction),
                                   gate.bootstrap_samples, gate.confidence, gate.seed)
    floor = abs(floor_stats["mean"])
    confirmed = decided["primary"]["net_gain"]["mean"]
    if decided["verdict"] == "promoted" and confirmed <= floor:
        decided["verdict"] = "rejected"
        decided["reasons"] = [f"confirmed gain {confirmed:.4f} does not exceed the noise floor "
                              f"{floor:.4f} ({reference.name} re-bred with seed {noise.seed})"]
    elif decided["verdict"] == "promoted":
        decided["reasons"].append(f"above the noise floor {floor:.4f}")
    decided["selection"] = {
        "search": scope.search, "stage": "confirmation", "trial": record.trial,
        "candidates": record.candidates, "finalists": record.finalists, "rank": record.rank,
        "sampler": record.sampler, "tasks": list(scope.tasks),
        "items_per_task": scope.items_per_task,
        "selection": {"verdict": picked["verdict"], **_figures(picked["primary"]["net_gain"])},
        "confirmation": {"confidence": strict.gate.confidence,
                         **_figures(decided["primary"]["net_gain"])},
        "noise": {"of": noise.of, "rebred": reference.name, "parent": noise.parent, "seed": noise.seed,
                  "experiment": noise.experiment,
                  "weights_sha256": noise.weights_sha256, "floor": floor,
                  **_figures(floor_stats)},
    }
    return decided
