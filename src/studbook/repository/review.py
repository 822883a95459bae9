"""Card diffs for pull requests: what changed in the population between two revisions.

Cards are read from git objects (GitPython), never from the working tree, so any two
revisions compare: a branch against main, two tags, a commit and its parent. The report
is Markdown: regressions beyond a contract's tolerance first, then every added, changed
and removed member with old value, new value and delta per benchmark, deltas against
parents, verdicts, and the new members' lineage as a Mermaid snippet. Every delta is
marked better, worse or unchanged by its metric's direction (lower bits per byte, higher
accuracy), a symbol and a word, so it reads at a glance in a GitHub comment and in a
terminal alike. A card is untrusted input: every value is escaped for Markdown or
Mermaid at the output (`escaping`), and when the head is the checkout whose evidence is
on disk, a card that disagrees with it is named as tampered at the top (`verification`).
"""

from __future__ import annotations

from typing import Any

from studbook.core.errors import StudbookError
from studbook.core.escaping import markdown as md
from studbook.core.escaping import markdown_code as code


def cards_at(rev: str, repo_dir: str = ".") -> dict[str, dict]:
    from git import Repo
    from git.exc import BadName, InvalidGitRepositoryError

    try:
        commit = Repo(repo_dir).commit(rev)
    except (BadName, ValueError, InvalidGitRepositoryError) as exc:
        raise StudbookError(f"unknown revision '{rev}': {exc}", key="revision") from None
    try:
        folder = commit.tree / "cards"
    except KeyError:
        return {}
    from studbook.repository.card_files import parse_card

    cards = {}
    for blob in folder.blobs:
        if blob.name.endswith(".json"):
            card = parse_card(blob.data_stream.read(), file=f"{rev}:cards/{blob.name}")
            cards[card["name"]] = card
    return cards


def _signed(change: float, direction: str) -> float:
    """Positive is better."""
    return change if direction == "higher" else -change


BETTER, WORSE, UNCHANGED = "✅ better", "❌ worse", "➖ unchanged"
SHOWN_DIGITS = 4  # deltas are shown with 4 decimals: one that rounds to zero reads unchanged


def _mark(change: Any, direction: Any) -> str:
    """` ✅ better`, ` ❌ worse` or ` ➖ unchanged` for a delta (new minus old, child minus
    parent) by its metric's direction; nothing when there is no delta or the direction is
    not one studbook knows (a card is untrusted: no claim rather than a wrong one)."""
    if isinstance(change, bool) or not isinstance(change, (int, float)) or \
            direction not in ("higher", "lower"):
        return ""
    if round(change, SHOWN_DIGITS) == 0:
        return f" {UNCHANGED}"
    return f" {BETTER}" if _signed(change, direction) > 0 else f" {WORSE}"


def _tolerances(card: dict) -> dict[tuple[str, str], float]:
    return {(g["task"], g["metric"]): g["tolerance"] for g in card.get("guards", [])}


def compare(base: dict[str, dict], head: dict[str, dict]) -> dict[str, Any]:
    added = sorted(set(head) - set(base))
    removed = sorted(set(base) - set(head))
    changed = sorted(n for n in set(base) & set(head) if base[n] != head[n])
    regressions: list[dict] = []
    entries = []
    for name in added:
        card = head[name]
        directions = {(b["task"], b["metric"]): b["direction"] for b in card["benchmarks"]}
        for guard in card.get("guards", []):
            if not guard["ok"]:
                regressions.append({"member": name, "task": guard["task"], "metric": guard["metric"],
                                    "change": guard["change"], "tolerance": guard["tolerance"],
                                    "against": card["reference_parent"],
                                    "direction": directions.get((guard["task"], guard["metric"]))})
        entries.append({"name": name, "status": "added", "card": card, "rows": [
            {"task": b["task"], "metric": b["metric"], "old": None, "new": b["value"], "delta": None,
             "direction": b["direction"], "parents": b["parents"]} for b in card["benchmarks"]]})
    for name in changed:
        old, new = base[name], head[name]
        olds = {(b["task"], b["metric"]): b["value"] for b in old["benchmarks"]}
        tolerances = _tolerances(new)
        rows = []
        for bench in new["benchmarks"]:
            key = (bench["task"], bench["metric"])
            before = olds.get(key)
            delta = None if before is None else bench["value"] - before
            rows.append({"task": bench["task"], "metric": bench["metric"], "old": before,
                         "new": bench["value"], "delta": delta, "direction": bench["direction"],
                         "parents": bench["parents"]})
            if delta is not None and key in tolerances and \
                    _signed(delta, bench["direction"]) < -tolerances[key]:
                regressions.append({"member": name, "task": bench["task"], "metric": bench["metric"],
                                    "change": delta, "tolerance": tolerances[key],
                                    "against": "its previous card", "direction": bench["direction"]})
        entries.append({"name": name, "status": "changed", "card": new, "old_card": old, "rows": rows})
    return {"added": added, "changed": changed, "removed": removed, "entries": entries,
            "regressions": regressions}


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    if not isinstance(value, (int, float)):  # defence in depth: a card's number is untrusted
        return md(value)
    if signed and round(value, SHOWN_DIGITS) == 0:
        value = 0.0  # +0.0000, never -0.0000
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _delta(change: Any, direction: Any) -> str:
    """A signed delta and its mark: `-0.0609 ✅ better`."""
    return _fmt(change, True) + _mark(change, direction)


def _legend(entries: list[dict]) -> str:
    """What the marks mean, with each shown metric's direction, in the order first shown."""
    phrases: list[str] = []
    for entry in entries:
        for row in entry["rows"]:
            if row["direction"] in ("higher", "lower"):
                phrase = f"{row['direction']} {code(row['metric'])} is better"
                if phrase not in phrases:
                    phrases.append(phrase)
    return (f"Deltas are marked {BETTER}, {WORSE} or {UNCHANGED} (at {SHOWN_DIGITS} decimals) by "
            f"each metric's direction: {'; '.join(phrases)}.")


def _trust_lines(verifications: dict | None, report: dict[str, Any]) -> list[str]:
    """The head's cards that disagree with their evidence, first and loud; those whose
    evidence is not in this workspace, named (what would measure them)."""
    if not verifications:
        return []
    out = []
    shown = report["added"] + report["changed"]
    for name in shown:
        check = verifications.get(name)
        if check is not None and check.status == "tampered":
            out += [f"**⛔ TAMPERED: {code(name)} — its card disagrees with its evidence: "
                    f"{code(check.field)}: card {md(_show(check.card))}, measured "
                    f"{md(_show(check.measured))}. Its figures below are not to be believed.**", ""]
    unverified = [n for n in shown if n in verifications and verifications[n].status == "unverified"]
    if unverified:
        out += ["Not verified here (evidence not in this workspace): " + "; ".join(
            f"{code(n)} — {md(verifications[n].note)}" for n in unverified), ""]
    return out


def _show(value: Any) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def render(report: dict[str, Any], base_rev: str, head_rev: str, head_cards: dict[str, dict],
           verifications: dict | None = None) -> str:
    """The Markdown report. Every value from a card is escaped for Markdown (a plain
    identifier in a code span, anything else as escaped text) and the lineage for Mermaid:
    a card is untrusted input. `verifications` (name -> verification.Verification) puts a
    tampered head card at the top."""
    title = f"# Card diff {code(base_rev)} → {code(head_rev)}"
    if not (report["added"] or report["changed"] or report["removed"]):
        return f"{title}\n\nno changes\n"
    out = [title, "", *_trust_lines(verifications, report)]
    if report["regressions"]:
        out += [f"**⚠ {len(report['regressions'])} guarded regression(s) beyond tolerance**", ""]
        out += ["| member | benchmark | metric | change | tolerance | against |",
                "|---|---|---|---:|---:|---|"]
        out += [f"| {md(r['member'])} | {md(r['task'])} | {md(r['metric'])} | "
                f"{_delta(r['change'], r['direction'])} | {_fmt(r['tolerance'])} | {md(r['against'])} |"
                for r in report["regressions"]]
    else:
        out.append("No guarded regression beyond the contracts' tolerances.")
    out += ["", f"{len(report['added'])} added, {len(report['changed'])} changed, "
            f"{len(report['removed'])} removed.", ""]
    if any(entry["rows"] for entry in report["entries"]):
        out += [_legend(report["entries"]), ""]
    for entry in report["entries"]:
        card = entry["card"]
        parents = ", ".join(md(p["name"]) for p in card["parents"])
        verdict = md(card["verdict"]) if entry["status"] == "added" else \
            f"{md(entry['old_card']['verdict'])} → {md(card['verdict'])}"
        out += [f"## {entry['status']}: {code(entry['name'])} — {verdict}", "",
                f"{md(card['kind'])} bred by {code(card['method'])} from {parents}; primary "
                f"{md(card['primary']['metric'])} {_fmt(card['primary']['child'])}, net gain "
                f"{_fmt(card['primary']['net_gain']['mean'], True)} over "
                f"{code(card['reference_parent'])}{_mark(card['primary']['net_gain']['mean'], 'higher')}.",
                ""]  # a net gain is signed positive-is-better whatever the metric
        parent_names = [p["parent"] for p in entry["rows"][0]["parents"]] if entry["rows"] else []
        added = entry["status"] == "added"  # no old value: value and deltas vs parents only
        head = "| benchmark | metric | " + ("value | " if added else "old | new | Δ | ")
        out.append(head + "".join(f"Δ vs {md(p)} | " for p in parent_names))
        out.append("|---|---|" + ("---:|" if added else "---:|---:|---:|") + "---:|" * len(parent_names))
        for row in entry["rows"]:
            against = "".join(f"{_delta(p['delta'], row['direction'])} | " for p in row["parents"])
            values = f"{_fmt(row['new'])} | " if added else \
                f"{_fmt(row['old'])} | {_fmt(row['new'])} | {_delta(row['delta'], row['direction'])} | "
            out.append(f"| {md(row['task'])} | {md(row['metric'])} | {values}{against}")
        out.append("")
    for name in report["removed"]:
        out += [f"## removed: {code(name)}", ""]
    if report["added"]:
        from studbook.repository.lineage import from_cards, mermaid, related, topological

        members = from_cards(list(head_cards.values()))
        shown: set[str] = set()
        for name in report["added"]:
            shown.update(related(members, name)[0] + [name])
        order = [n for n in topological(members) if n in shown]
        out += ["## Lineage of the new members", "", mermaid(members, order).rstrip("\n"), ""]
    return "\n".join(line.rstrip() for line in out).rstrip("\n") + "\n"


def card_diff(base_rev: str, head_rev: str = "HEAD", repo_dir: str = ".") -> tuple[str, int]:
    """The Markdown report and the exit status: 1 when a guarded benchmark regresses, or
    when a card added or changed in the head disagrees with its evidence.

    The head's cards are verified (`repository.verification`) when the head is HEAD in this
    working directory — the checkout whose evidence (per-item evaluations, weights) is on
    disk, as in CI after breeding the pull request; any other revision's cards are
    compared as committed.
    """
    from pathlib import Path

    base, head = cards_at(base_rev, repo_dir), cards_at(head_rev, repo_dir)
    report = compare(base, head)
    verifications = None
    if head_rev == "HEAD" and Path(repo_dir).resolve() == Path.cwd().resolve():
        from studbook.repository.verification import verify_cards

        verifications = verify_cards([head[n] for n in report["added"] + report["changed"]])
    tampered = any(v.status == "tampered" for v in (verifications or {}).values())
    status = 1 if report["regressions"] or tampered else 0
    return render(report, base_rev, head_rev, head, verifications), status
