"""The gate: does a child beat its best parent, with paired statistics?

Net gain is measured on the contract's primary metric, item by item on the same items
(a paired bootstrap over per-item differences), against the parent that scores best.
Guarded benchmarks may not regress beyond their tolerance (paired bootstrap too: the
regression must be shown, not a noisy dip). A founder's reference parent
is the uniform byte model: 8 bits per byte on every item, 1/k on a k-way choice, the
chance score of each registered metric (`evidence.metrics`); a founder's contract gates
only such metrics (checked before compute). Any metric lm-eval averages over items is
gated the same way, under the direction the contract resolved from its task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from studbook.evidence import metrics

UNIFORM = "uniform-byte"


@dataclass(frozen=True)
class Scores:
    """One model's per-item scores: task -> item id -> metric -> value."""

    name: str
    sha256: str | None
    items: dict[str, dict[str, dict[str, float]]]

    def vector(self, task: str, metric: str, ids: list[str]) -> np.ndarray:
        rows = self.items[task]
        missing = [i for i in ids if metric not in rows[i]]
        if missing:
            raise ValueError(f"{self.name} has no per-item '{metric}' on {len(missing)} item(s) of "
                             f"{task}; evaluate it with the contract's metrics")
        return np.array([rows[i][metric] for i in ids], dtype=np.float64)

    def has(self, task: str, metric: str, ids: list[str]) -> bool:
        rows = self.items.get(task, {})
        return all(i in rows and metric in rows[i] for i in ids)


def scores_from_samples(name: str, sha256: str | None, samples: dict[str, list[dict]]) -> Scores:
    return Scores(name, sha256, {task: {row["id"]: row for row in rows}
                                 for task, rows in samples.items()})


def uniform_scores(child: Scores) -> Scores:
    """The uniform byte model scored on exactly the child's items."""
    items: dict[str, dict[str, dict[str, float]]] = {}
    for task, rows in child.items.items():
        items[task] = {}
        for item_id, row in rows.items():
            entries = {key: metrics.registered(key) for key in row}  # None for id, bytes, …
            items[task][item_id] = {key: entry.chance(row) for key, entry in entries.items()
                                    if entry is not None and entry.chance is not None}
    return Scores(UNIFORM, None, items)


def aggregate(scores: Scores, child: Scores, task: str, metric: str) -> float | None:
    """A task-level figure as lm-eval computes it: bits per byte weighted by the bytes of
    each item (corpus-level, from the child's byte counts: same items, same bytes); any
    other metric as a plain mean. None when `scores` has no such figure (a metric without
    a chance score, for the know-nothing reference)."""
    ids = sorted(child.items[task])
    if not scores.has(task, metric, ids):
        return None
    values = scores.vector(task, metric, ids)
    entry = metrics.registered(metric)
    if entry is not None and entry.weighted_by_bytes:
        weights = np.array([child.items[task][i]["bytes"] for i in ids], dtype=np.float64)
        return float((values * weights).sum() / weights.sum())
    return float(values.mean())


def _pooled(scores: Scores, tasks: list[str], metric: str, ids: dict[str, list[str]]) -> np.ndarray:
    return np.concatenate([scores.vector(t, metric, ids[t]) for t in tasks])


def paired_bootstrap(gain: np.ndarray, samples: int, confidence: float, seed: int) -> dict:
    """Mean per-item gain with a percentile interval and a one-sided p-value (gain <= 0)."""
    rng = np.random.default_rng(seed)
    means = gain[rng.integers(0, len(gain), size=(samples, len(gain)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return {
        "mean": float(gain.mean()),
        "ci_low": float(np.quantile(means, alpha)),
        "ci_high": float(np.quantile(means, 1 - alpha)),
        "p_value": float((np.sum(means <= 0) + 1) / (samples + 1)),
        "n_items": int(len(gain)),
    }


def _signed(delta: np.ndarray | float, direction: str):
    """Positive means better, whatever the metric's direction."""
    return -delta if direction == "lower" else delta


def decide(child: Scores, parents: list[Scores], contract) -> dict:
    """The verdict, with every number that led to it."""
    if not parents:
        parents = [uniform_scores(child)]
    primary = contract.primary
    for spec in (primary, *contract.guarded):
        if spec.direction is None:  # set by evidence.tasks.check_contract from the task
            raise ValueError(f"no direction for '{spec.metric}': the contract was not checked "
                             "against its tasks (evidence.tasks.check_contract)")
    ids = {t: sorted(child.items[t]) for t in primary.tasks}
    for parent in parents:
        for task in primary.tasks:
            missing = set(ids[task]) - set(parent.items.get(task, {}))
            if missing:
                raise ValueError(f"parent {parent.name} was not scored on {len(missing)} "
                                 f"item(s) of {task}; evaluate it on the same items")
    child_vec = _pooled(child, primary.tasks, primary.metric, ids)
    means = {p.name: float(_pooled(p, primary.tasks, primary.metric, ids).mean()) for p in parents}
    best = max(parents, key=lambda p: _signed(means[p.name], primary.direction))
    best_vec = _pooled(best, primary.tasks, primary.metric, ids)
    gain = _signed(child_vec - best_vec, primary.direction)
    stats = paired_bootstrap(gain, contract.gate.bootstrap_samples, contract.gate.confidence,
                             contract.gate.seed)
    reasons = []
    promoted = True
    if stats["ci_low"] <= contract.gate.min_net_gain:
        promoted = False
        reasons.append(f"net gain on {primary.metric} not shown: {contract.gate.confidence:.0%} "
                       f"interval low end {stats['ci_low']:.4f} <= {contract.gate.min_net_gain:.4f}")
    guards = []
    for guard in contract.guarded:
        guard_ids = sorted(child.items[guard.task])
        child_items = child.vector(guard.task, guard.metric, guard_ids)
        parent_items = best.vector(guard.task, guard.metric, guard_ids)
        change = paired_bootstrap(_signed(child_items - parent_items, guard.direction),
                                  contract.gate.bootstrap_samples, contract.gate.confidence,
                                  contract.gate.seed)
        # a regression fails the gate when it is shown beyond tolerance: the whole interval
        # lies below -tolerance (a noisy dip on a few items is not evidence of one)
        ok = change["ci_high"] >= -guard.tolerance
        guards.append({"task": guard.task, "metric": guard.metric,
                       "child": float(child_items.mean()), "parent": float(parent_items.mean()),
                       "change": change["mean"], "change_ci_low": change["ci_low"],
                       "change_ci_high": change["ci_high"], "tolerance": guard.tolerance, "ok": ok})
        if not ok:
            promoted = False
            reasons.append(f"guarded {guard.task} {guard.metric} regressed by {-change['mean']:.4f}, "
                           f"interval [{change['ci_low']:+.4f}, {change['ci_high']:+.4f}] wholly "
                           f"below the tolerance -{guard.tolerance:.4f}")
    if promoted:
        reasons.append(f"net gain {stats['mean']:.4f} on {primary.metric} over {best.name}, "
                       f"{contract.gate.confidence:.0%} interval [{stats['ci_low']:.4f}, "
                       f"{stats['ci_high']:.4f}]")
    # every parent's score on every benchmark, on the child's items, aggregated as lm-eval
    # aggregates the child's figure (so the card's deltas compare like with like)
    parent_benchmarks = {
        p.name: {b.task: aggregate(p, child, b.task, b.metric)
                 for b in contract.benchmarks if b.task in p.items}
        for p in parents}
    return {
        "verdict": "promoted" if promoted else "rejected",
        "parent_benchmarks": parent_benchmarks,
        "reference_parent": best.name,
        "reference_sha256": best.sha256,
        "primary": {"metric": primary.metric, "direction": primary.direction,
                    "tasks": list(primary.tasks), "child": float(child_vec.mean()),
                    "parents": means, "net_gain": stats},
        "guards": guards,
        "reasons": reasons,
    }
