"""Stage record: the verdict, the harvested hard examples and the card (card last).

`gate`: a paired bootstrap of the child against its best parent on the per-item scores;
`harvest`: what child and parents got wrong on the mining split becomes hard examples;
`card`: the evaluation card and its JSON twin, rendered from the recorded facts (and the
card again as the member folder's README.md, for the Hub). All three
only read what `evaluate` wrote, so they form one stage: each output is written
atomically and the card is written last, so an interrupted run leaves no card that a
later stage or the population would accept.
"""

from __future__ import annotations

import json
from pathlib import Path

from studbook.core.atomic import sha256_bytes, write_json_atomic, write_text_atomic
from studbook.repository.generation import Generation, GenerationPaths


def gate(gen: Generation, evaluation: dict, child_sha: str) -> dict:
    from studbook.evidence.records import read_evaluation
    from studbook.evidence.gate import scores_from_samples
    from studbook.evidence.selection import verdict

    child = scores_from_samples(gen.name, child_sha, evaluation["samples"])
    parents = [scores_from_samples(p.name, p.sha256, read_evaluation(p.eval_dir)["samples"])
               for p in gen.parents]
    return verdict(gen.name, child, parents, gen.recipe.contract)  # scoped by a search


def harvest(gen: Generation, evaluation: dict, child_sha: str) -> list[dict]:
    from studbook.evidence.records import read_evaluation
    from studbook.evidence.harvest import harvest as collect

    spec, contract = gen.recipe.contract.harvest, gen.contract_name
    parent_scores = {p.name: {"sha256": p.sha256, "samples": read_evaluation(p.eval_dir)["samples"]}
                     for p in gen.parents}
    parent_files = [GenerationPaths(p.name).hard_examples(contract) for p in gen.parents]
    return collect(gen.name, contract, {"sha256": child_sha, "samples": evaluation["samples"]},
                   parent_scores, evaluation["results"], spec.tasks, spec.per_task, parent_files)


def _with_wall_time(meta: dict, wall: Path) -> dict:
    """The artifact's metadata plus the breeding's wall time and host (not a DVC input: a
    volatile figure must not make anything re-run)."""
    compute = json.loads(wall.read_text()) if wall.is_file() else {}
    if compute.get("weights_sha256", meta["weights_sha256"]) != meta["weights_sha256"]:
        compute = {}  # it timed other weights: breed restored these from DVC's run cache
    if "seconds" in compute:  # `{}`: a search's placeholder, breed restored from DVC's run cache
        meta = {**meta, "compute": {**meta["compute"], "seconds": compute["seconds"],
                                    "host": compute.get("host")}}
    return meta


def card_evidence(gen: Generation, evaluation: dict, harvested: bool) -> dict:
    from studbook.evidence.records import read_evaluation
    from studbook.evidence.harvest import inherited, read_hard_examples, retention

    paths, contract = gen.paths, gen.contract_name
    evidence: dict = {"relation": gen.method.relation}
    if harvested:
        own = read_hard_examples(paths.hard_examples(contract))
        evidence["hard_examples"] = {"file": str(paths.hard_examples(contract)), "total": len(own),
                                     "new": sum(1 for r in own if r["provenance"]["generation"] == gen.name)}
        kept = inherited([GenerationPaths(p.name).hard_examples(contract) for p in gen.parents])
        if kept:
            evidence["retention"] = {
                "items": len(kept), "child": retention(kept, evaluation["samples"]),
                "parents": {p.name: retention(kept, read_evaluation(p.eval_dir)["samples"])
                            for p in gen.parents}}
    return evidence


def run(gen: Generation) -> dict:
    from studbook.core.errors import StudbookError
    from studbook.evidence.cards import card_context, compounding, render_card
    from studbook.evidence.records import read_evaluation
    from studbook.evidence.harvest import write_hard_examples
    from studbook.evidence.selection import in_scope, read_scope
    from studbook.operators.artifacts import read_meta
    from studbook.repository.readme import write_member_readme

    paths, contract = gen.paths, gen.contract_name
    scoped = in_scope(gen.recipe.contract, read_scope(gen.name))  # a candidate: no harvest
    meta = read_meta(gen.artifact)
    evaluation = read_evaluation(paths.eval)
    verdict = gate(gen, evaluation, meta["weights_sha256"])
    write_json_atomic(paths.verdict, verdict)
    summary: dict = {"generation": gen.name, "verdict": verdict["verdict"],
                     "reference_parent": verdict["reference_parent"]}
    net = verdict["primary"]["net_gain"]
    summary.update({"net_gain": round(net["mean"], 4), "net_gain_ci_low": round(net["ci_low"], 4),
                    "net_gain_ci_high": round(net["ci_high"], 4), "p_value": round(net["p_value"], 4)})
    if scoped.harvest is not None:
        rows = harvest(gen, evaluation, meta["weights_sha256"])
        write_hard_examples(rows, paths.hard_examples(contract), paths.hard_examples_task(contract),
                            contract, gen.name)
        new = sum(1 for r in rows if r["provenance"]["generation"] == gen.name)
        summary.update({"hard_examples": len(rows), "hard_examples_new": new})
    meta = _with_wall_time(meta, paths.compute)
    evidence = card_evidence(gen, evaluation, scoped.harvest is not None)
    if gen.recipe.compounding is not None:
        reference = GenerationPaths(gen.recipe.compounding.scratch)
        if not (reference.artifact("model") / "studbook.json").is_file():
            raise StudbookError(f"scratch reference '{gen.recipe.compounding.scratch}' is not bred",
                                file=gen.resolved.recipe_file, key="compounding.scratch")
        evidence["compounding"] = compounding(
            meta["compute"], gen.recipe.compounding.scratch,
            _with_wall_time(read_meta(reference.artifact("model")), reference.compute)["compute"])
    context = card_context(meta=meta, results=evaluation["results"], verdict=verdict,
                           contract=scoped, relation=gen.method.base_model_relation, evidence=evidence,
                           license=gen.recipe.effective_license.front_matter())
    text = render_card(context)
    write_json_atomic(paths.card_json, context)
    readme = write_member_readme(gen.artifact, text)  # the card again, for the Hub
    write_text_atomic(paths.card, text)  # card last
    return {**summary, "card": str(paths.card), "card_sha256": sha256_bytes(text.encode()),
            "readme": readme}
