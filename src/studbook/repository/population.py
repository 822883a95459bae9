"""The population, read from the repository itself: every card's JSON twin.

Promoted members and rejected children (negative results) are both kept and both
queryable; nothing lives in a side database.
"""

from __future__ import annotations

from pathlib import Path

from studbook.core.errors import StudbookError


def members(cards_dir: str | Path = "cards") -> list[dict]:
    from studbook.repository.card_files import parse_card

    return [parse_card(file.read_bytes(), file=file.as_posix())
            for file in sorted(Path(cards_dir).glob("*.json"))]


def member(name: str, cards_dir: str | Path = "cards") -> dict:
    from studbook.repository.card_files import parse_card

    file = Path(cards_dir) / f"{name}.json"
    if not file.is_file():
        known = ", ".join(m["name"] for m in members(cards_dir)) or "none"
        raise StudbookError(f"no member named '{name}' (known: {known})", file=str(file))
    return parse_card(file.read_bytes(), file=file.as_posix())


def row(m: dict, verification=None) -> dict:
    """One member's line; `verification` (repository.verification) says whether its
    figures were checked against its evidence here."""
    scores = {b["task"]: b["value"] for b in m["benchmarks"]}
    return {
        "name": m["name"], "kind": m["kind"], "method": m["method"], "verdict": m["verdict"],
        "parents": [p["name"] for p in m["parents"]],
        "primary": round(m["primary"]["child"], 4), "primary_metric": m["primary"]["metric"],
        "net_gain": round(m["primary"]["net_gain"]["mean"], 4),
        "parameters": m["parameters"], "tokens": m["compute"]["tokens"],
        "flops": m["compute"]["flops"], "contract": m["contract"],
        "seconds": m["compute"]["seconds"], "scores": scores,
        "verification": None if verification is None else verification.as_dict(),
    }


def table(cards_dir: str | Path = "cards") -> list[dict]:
    """Every member's row, verified against its evidence; `best` marks, per contract, the
    promoted member with the best primary score among those whose card was verified — a
    card that disagrees with its evidence, or whose evidence is not here, is never best."""
    from studbook.repository.verification import verify_cards

    cards = members(cards_dir)
    checked = verify_cards(cards)
    rows = [row(m, checked[m["name"]]) for m in cards]
    best: dict[str, tuple[float, str]] = {}
    for m, r in zip(cards, rows):
        if r["verdict"] == "promoted" and checked[m["name"]].status == "verified":
            sign = -1 if m["primary"].get("direction") == "higher" else 1
            key = (sign * m["primary"]["child"], m["name"])
            best[m["contract"]] = min(best.get(m["contract"], key), key)
    for r in rows:
        r["best"] = best.get(r["contract"], (None, None))[1] == r["name"]
    return rows


def select_parents(method_name: str, contract_name: str, cards_dir: str | Path = "cards",
                   conf_dir: str | Path = "conf", verify=None) -> tuple[list[str], dict]:
    """Parents for `--parents auto`: promoted, compatible members ranked by the contract.

    A member is a candidate when it was promoted, its card reports every primary task of
    the contract, its architecture is accepted, it fits the parameter budget and its card
    agrees with its evidence in this workspace (`verify`, by default
    `verification.verify_card`: a tampered or unverified card is excluded, with that
    reason, so a hand-edited score never chooses a parent). The
    ranking is the pooled primary score (mean over the primary tasks); the method's
    minimum number of parents is taken (two for a merge without a base). The returned
    selection, with every candidate and the reason it was or was not chosen, goes
    into the recipe.
    """
    from studbook.operators import methods
    from studbook.core.config import load_yaml, validate
    from studbook.repository.recipes import Contract

    method = methods.get(method_name, key="method")
    contract_file = Path(conf_dir) / "contract" / f"{contract_name}.yaml"
    contract = validate(Contract, load_yaml(contract_file), file=str(contract_file))
    from studbook.evidence.tasks import check_contract

    contract = check_contract(contract, str(contract_file))  # the primary metric's direction
    from studbook.repository.verification import verify_card

    cache: dict = {}  # parents' evaluations, read once
    verify = verify or (lambda card: verify_card(card, cache))
    wanted = max(1, method.min_parents)
    candidates = []
    for m in members(cards_dir):
        scores = {b["task"]: b["value"] for b in m["benchmarks"]}
        reason = None
        if m["verdict"] != "promoted":
            reason = f"verdict {m['verdict']}"
        elif m["kind"] not in method.parent_kinds:
            reason = f"an {m['kind']}; '{method.name}' takes {', '.join(method.parent_kinds)}"
        elif m["architecture"] not in contract.compatibility.architectures:
            reason = f"architecture {m['architecture']} not accepted"
        elif m.get("total_parameters", m["parameters"]) > contract.compatibility.max_parameters:
            reason = "over the parameter budget"
        elif any(t not in scores for t in contract.primary.tasks):
            reason = "not scored on the contract's primary tasks"
        else:  # only figures measured here are believed: a card may have been edited
            checked = verify(m)
            reason = None if checked.status == "verified" else str(checked)
        score = None if reason else sum(scores[t] for t in contract.primary.tasks) / len(contract.primary.tasks)
        candidates.append({"name": m["name"], "score": None if score is None else round(score, 6),
                           "excluded": reason})
    sign = 1 if contract.primary.direction == "lower" else -1
    ranked = sorted((c for c in candidates if c["excluded"] is None),
                    key=lambda c: (sign * c["score"], c["name"]))
    if len(ranked) < wanted:
        distrusted = [f"{c['name']} ({c['excluded']})" for c in candidates
                      if c["excluded"] and c["excluded"].startswith(("tampered", "unverified"))]
        raise StudbookError(f"'{method.name}' needs {wanted} parent(s); the population has "
                            f"{len(ranked)} compatible promoted member(s) for contract '{contract_name}'"
                            + (f"; not verified here: {'; '.join(distrusted)}" if distrusted else ""),
                            file=str(contract_file), key="compatibility")
    chosen = [c["name"] for c in ranked[:wanted]]
    selection = {
        "rule": f"promoted, compatible with contract '{contract_name}', ranked by mean "
                f"{contract.primary.metric} over its primary tasks ({contract.primary.direction} is better)",
        "chosen": chosen,
        "candidates": sorted(candidates, key=lambda c: c["name"]),
    }
    return chosen, selection


def negative_results(cards_dir: str | Path = "cards", root: str | Path = ".") -> list[dict]:
    """The archive of negative results: every member not promoted (its card kept), then
    every candidate a breeding search did not promote (`searches/*/ledger.jsonl`)."""
    from studbook.evolve import ledger

    rows = [{"name": m["name"], "method": m["method"], "parents": [p["name"] for p in m["parents"]],
             "reference_parent": m["reference_parent"], "reasons": m["reasons"],
             "net_gain": m["primary"]["net_gain"]["mean"], "status": m["verdict"], "search": None}
            for m in members(cards_dir) if m["verdict"] != "promoted"]
    for search, path in ledger.ledgers(root).items():
        rows += ledger.negatives(ledger.read_ledger(path), search)
    return rows
