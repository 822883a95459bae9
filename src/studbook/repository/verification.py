"""A card checked against its evidence: nothing is trusted that was not measured.

A card twin (`cards/NAME.json`) is committed, so a pull request may edit it. Its evidence
is not committed: the per-item evaluations (`generations/NAME/eval/`) and the weights
(`models/NAME/`, `adapters/NAME/`) are DVC outputs, present only where the generation
was bred (or pulled). Every figure a decision reads from a card (parent selection, the
population, the card diff) is therefore recomputed here from that evidence by the
functions that produced it — the weights hash, the gate's per-item scores and
aggregation, the gate's verdict — and compared at the precision the card writes:

- *verified*: every figure agrees;
- *tampered*: the first field that disagrees, with the card's value and the measured one;
- *unverified*: the evidence is not in this workspace (the message names the command
  that measures it).

A member re-bred here with other numerics also disagrees (`studbook drift` says why);
nothing can tell it from an edit but its history, so it is not trusted either. Paths
are relative to the working directory, as everywhere in studbook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERIFIED, TAMPERED, UNVERIFIED = "verified", "tampered", "unverified"
ROUNDED = 0.5e-6 + 1e-9  # evidence.cards rounds benchmark values to 6 decimals
EXACT = 1e-9  # figures the card keeps unrounded (the gate's): equal but for float noise
_ABSENT = "absent"


@dataclass(frozen=True)
class Verification:
    name: str
    status: str  # VERIFIED, TAMPERED or UNVERIFIED
    field: str | None = None  # the first field that disagrees (tampered)
    card: Any = None
    measured: Any = None
    note: str = ""  # what is missing, and how to measure it (unverified)

    def __str__(self) -> str:
        if self.status == TAMPERED:
            return f"tampered: {self.field}: card {_show(self.card)}, measured {_show(self.measured)}"
        return f"unverified: {self.note}" if self.status == UNVERIFIED else VERIFIED

    def as_dict(self) -> dict:
        return {"status": self.status, "field": self.field, "card": self.card,
                "measured": self.measured, "note": self.note or None, "summary": str(self)}


class _Disagreement(Exception):
    def __init__(self, field: str, card: Any, measured: Any):
        super().__init__(field)
        self.field, self.card, self.measured = field, card, measured


class _Missing(Exception):
    pass


def _show(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else repr(value)


def _check(field: str, card: Any, measured: Any, tolerance: float = EXACT) -> None:
    """Raise the disagreement unless `card` equals `measured` (numbers within `tolerance`)."""
    if isinstance(measured, float):
        agrees = (isinstance(card, (int, float)) and not isinstance(card, bool)
                  and math.isclose(card, measured, rel_tol=EXACT, abs_tol=tolerance))
    else:
        agrees = card == measured
    if not agrees:
        raise _Disagreement(field, card, round(measured, 6) if tolerance == ROUNDED else measured)


def _get(data: Any, *keys: Any) -> Any:
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return _ABSENT
    return data


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _artifact(name: str) -> Path | None:
    from studbook.repository.refs import ARTIFACT_ROOTS

    for root in ARTIFACT_ROOTS.values():
        folder = Path(root) / name
        if any(folder.glob("*.safetensors")):
            return folder
    return None


def _evaluation(name: str, cache: dict) -> dict:
    """A generation's evaluation record (cached: parents are shared between members)."""
    from studbook.evidence.records import read_evaluation
    from studbook.repository.generation import GenerationPaths

    if name not in cache:
        folder = GenerationPaths(name).eval
        if not (folder / "results.json").is_file():
            raise _Missing(f"the evaluation of '{name}' ({folder}) is not in this workspace; "
                           f"`dvc repro generations/{name}/dvc.yaml` measures it")
        try:
            cache[name] = read_evaluation(folder)
        except (OSError, ValueError) as exc:
            raise _Missing(f"the evaluation of '{name}' ({folder}) cannot be read ({exc}); `dvc repro "
                           f"-f generations/{name}/dvc.yaml:evaluate` measures it again") from None
    return cache[name]


def verify_card(card: dict, cache: dict | None = None) -> Verification:
    """The card's verification against the evidence in this workspace (never raises on a
    disagreement: it is the answer). `cache` may be shared across cards."""
    name = str(card.get("name"))
    try:
        artifact = _artifact(name)
        if artifact is None:
            raise _Missing(f"no artifact models/{name} or adapters/{name} in this workspace; "
                           f"`dvc repro generations/{name}/dvc.yaml` measures it")
        _compare(card, artifact, {} if cache is None else cache)
    except _Disagreement as found:
        return Verification(name, TAMPERED, found.field, found.card, found.measured)
    except _Missing as missing:
        return Verification(name, UNVERIFIED, note=str(missing))
    return Verification(name, VERIFIED)


def verify_cards(cards: list[dict]) -> dict[str, Verification]:
    cache: dict = {}
    return {str(card.get("name")): verify_card(card, cache) for card in cards}


def _compare(card: dict, artifact: Path, cache: dict) -> None:
    """Raise the first disagreement between `card` and its evidence, or _Missing."""
    from studbook.evidence.gate import aggregate, scores_from_samples
    from studbook.operators.artifacts import weights_sha256

    name = card["name"]
    sha = weights_sha256(artifact)
    _check("weights_sha256", card.get("weights_sha256"), sha)
    evaluation = _evaluation(name, cache)
    child = scores_from_samples(name, sha, evaluation["samples"])
    benchmarks = card.get("benchmarks")
    if not isinstance(benchmarks, list) or not all(isinstance(b, dict) for b in benchmarks):
        raise _Disagreement("benchmarks", benchmarks, "a list of benchmark results")
    measured: dict[tuple, float] = {}
    for index, bench in enumerate(benchmarks):
        task, metric = bench.get("task"), bench.get("metric")
        figure = None
        if isinstance(task, str) and isinstance(metric, str):
            figure = aggregate(child, child, task, metric) if task in child.items else None
            if figure is None:  # a metric lm-eval aggregates without per-item numbers
                figure = _get(evaluation, "results", task, "metrics", metric)
        if not isinstance(figure, float):
            raise _Disagreement(f"benchmarks[{index}]", f"{task} {metric}", "not evaluated")
        measured[(task, metric)] = figure
        _check(f"benchmarks[{index}].value", bench.get("value"), figure, ROUNDED)
        items = len(child.items[task]) if task in child.items else evaluation["results"][task]["items"]
        _check(f"benchmarks[{index}].n_items", bench.get("n_items"), items)
    _check_gate(card, child, measured, cache)


def _check_gate(card: dict, child, measured: dict, cache: dict) -> None:
    """The gate run again on the same per-item scores: verdict, reference parent, primary
    figures, guards and every parent's benchmark value must be the card's."""
    from studbook.core.errors import StudbookError
    from studbook.evidence.gate import scores_from_samples
    from studbook.evidence.selection import in_scope, read_scope, verdict
    from studbook.evidence.tasks import check_contract
    from studbook.repository.generation import GenerationPaths
    from studbook.repository.recipes import compose_recipe

    name = card["name"]
    if not GenerationPaths(name).recipe.is_file():
        raise _Missing(f"no recipe {GenerationPaths(name).recipe} to run its gate again")
    try:  # the recipe and contract the record stage gated with (composed, directions resolved)
        resolved = compose_recipe(GenerationPaths(name).recipe, "conf")
        recipe = resolved.recipe
        contract = check_contract(recipe.contract, resolved.group_files["contract"],
                                  founder=not recipe.parents)
        scoped = in_scope(contract, read_scope(name))  # a search's candidate: its split tasks
    except StudbookError as exc:
        raise _Missing(f"its recipe does not load, so its gate cannot be run again ({exc})") from None
    benchmarks = card["benchmarks"]  # a list of objects (checked by _compare)
    _check("benchmarks", [(b.get("task"), b.get("metric")) for b in benchmarks],
           [(b.task, b.metric) for b in scoped.benchmarks])
    named = [_get(p, "name") for p in _list(card.get("parents")) if _get(p, "reference") is not True]
    _check("parents", named, list(recipe.parents))
    parents = [scores_from_samples(p, None, _evaluation(p, cache)["samples"]) for p in recipe.parents]
    try:
        decided = verdict(name, child, parents, contract)  # the record stage's own gate
    except (ValueError, KeyError, StudbookError) as exc:
        raise _Missing(f"its gate cannot be run again on the evaluations here ({exc})") from None
    _check("verdict", card.get("verdict"), decided["verdict"])
    _check("reference_parent", card.get("reference_parent"), decided["reference_parent"])
    primary = decided["primary"]
    _check("primary.child", _get(card, "primary", "child"), primary["child"])
    claimed = _get(card, "primary", "parents")
    _check("primary.parents", sorted(claimed) if isinstance(claimed, dict) else claimed,
           sorted(primary["parents"]))
    for parent, value in sorted(primary["parents"].items()):
        _check(f"primary.parents.{parent}", _get(card, "primary", "parents", parent), value)
    for key in ("mean", "ci_low", "ci_high", "p_value"):
        _check(f"primary.net_gain.{key}", _get(card, "primary", "net_gain", key),
               primary["net_gain"][key])
    _check("guards", [(_get(g, "task"), _get(g, "metric")) for g in _list(card.get("guards"))],
           [(g["task"], g["metric"]) for g in decided["guards"]])
    for index, guard in enumerate(decided["guards"]):
        _check(f"guards[{index}].ok", _get(card, "guards", index, "ok"), guard["ok"])
        _check(f"guards[{index}].change", _get(card, "guards", index, "change"), guard["change"])
    for block in ("selection", "confirmation", "noise"):  # a search's finalist
        for key, value in (decided.get("selection") or {}).get(block, {}).items():
            if isinstance(value, float):
                _check(f"selection.{block}.{key}", _get(card, "selection", block, key), value)
    for index, bench in enumerate(benchmarks):
        rows = [(p, values.get(bench["task"]))
                for p, values in sorted(decided["parent_benchmarks"].items())]
        _check(f"benchmarks[{index}].parents", [_get(p, "parent") for p in _list(bench.get("parents"))],
               [p for p, _ in rows])
        for position, (parent, value) in enumerate(rows):
            field = f"benchmarks[{index}].parents[{position}]"
            _check(f"{field}.value", _get(bench, "parents", position, "value"), value)
            delta = None if value is None else measured[(bench["task"], bench["metric"])] - value
            _check(f"{field}.delta", _get(bench, "parents", position, "delta"), delta)
