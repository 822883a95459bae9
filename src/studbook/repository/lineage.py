"""Lineage: the family tree of the population, read from the repository itself.

Nodes are the members' cards (`cards/*.json`: promoted and rejected alike); a member's
identity is the sha256 of its weights, and an edge joins a child to the member whose
weights hash its card names as a parent, so renames, rebases and re-bred siblings
cannot confuse it. Git supplies the rest with GitPython: the commit that added each
card (when, by whom) and, if that commit came in through a merge on the first-parent
line of the current branch, that merge (the pull request). No side database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studbook.core.errors import StudbookError
from studbook.repository.card_files import REFERENCE
from studbook.core.escaping import mermaid_id, mermaid_label, terminal

MISSING = "no card (not bred or card missing)"  # how a parent no card matches is shown


@dataclass
class Member:
    name: str
    sha256: str
    kind: str
    method: str
    verdict: str
    contract: str
    parents: list[dict]  # [{"name", "sha256"}]; a founder's reference parent has no sha256
    primary: float
    net_gain: float
    tokens: int
    flops: float
    seconds: float
    arrived: dict[str, Any] | None = None  # commit, author, date, subject, merge
    children: list[str] = field(default_factory=list)

    @property
    def parent_names(self) -> list[str]:
        """Parents that are members (by content hash, or by name when the parent drifted)."""
        return [p["name"] for p in self.parents if p.get("edge")]

    @property
    def missing_parents(self) -> list[dict]:
        """Parents the card names that no card matches (never bred here, or card deleted):
        shown as nodes of their own, never silently dropped."""
        return [p for p in self.parents if p.get("missing")]


def _member(card: dict) -> Member:
    return Member(
        name=card["name"], sha256=card["weights_sha256"], kind=card["kind"],
        method=card["method"], verdict=card["verdict"], contract=card["contract"],
        parents=[{"name": p["name"], "sha256": p.get("sha256")} for p in card["parents"]],
        primary=card["primary"]["child"], net_gain=card["primary"]["net_gain"]["mean"],
        tokens=card["compute"]["tokens"], flops=card["compute"]["flops"],
        seconds=card["compute"]["seconds"])


def arrivals(repo_dir: str | Path = ".", rev: str = "HEAD") -> dict[str, dict]:
    """card name -> the commit that added it, and the first-parent merge that brought it in."""
    from git import Repo
    from git.exc import GitCommandError, InvalidGitRepositoryError

    try:
        repo = Repo(repo_dir, search_parent_directories=False)
        log = repo.git.log(rev, "--diff-filter=A", "--name-only", "--format=%x00%H%x1f%an%x1f%aI%x1f%s",
                           "--", "cards/*.json")
        graph = {line.split()[0]: line.split()[1:] for line in
                 repo.git.rev_list("--parents", rev).splitlines()}
    except (InvalidGitRepositoryError, GitCommandError) as exc:
        raise StudbookError(f"cannot read git history: {exc}", file=str(repo_dir)) from None
    added: dict[str, dict] = {}
    for block in log.split("\x00")[1:]:
        header, *files = [line for line in block.splitlines() if line.strip()]
        commit, author, date, subject = header.split("\x1f")
        for file in files:
            name = Path(file).stem
            # git log walks newest first: the last write is the earliest addition
            added[name] = {"commit": commit, "author": author, "date": date, "subject": subject,
                           "merge": None}
    # Walk the first-parent line oldest first, keeping the set of commits reachable from
    # the current tip: what a merge's side parents add to that set came in through it.
    line: list[str] = []
    tip = repo.commit(rev).hexsha
    while tip:
        line.append(tip)
        tip = graph[tip][0] if graph[tip] else None
    brought_by: dict[str, str] = {}
    reachable: set[str] = set()
    for commit in reversed(line):
        for side in graph[commit][1:]:
            stack = [side]
            while stack:
                current = stack.pop()
                if current in reachable:
                    continue
                reachable.add(current)
                brought_by[current] = commit
                stack.extend(graph[current])
        reachable.add(commit)
    subjects: dict[str, str] = {}
    for info in added.values():
        merge = brought_by.get(info["commit"])
        if merge is not None:
            if merge not in subjects:
                subjects[merge] = repo.commit(merge).summary
            info["merge"] = {"commit": merge, "subject": subjects[merge]}
    return added


def load(cards_dir: str | Path = "cards", repo_dir: str | Path | None = ".") -> dict[str, Member]:
    """Every member with its edges (by weights sha256) and, in a git repository, its arrival.

    In a git repository identity comes from the committed cards (HEAD): a member re-bred
    here with other weights does not change who its children descend from (`studbook
    drift` reports it); cards not committed yet are added as they are on disk.
    """
    on_disk = {f.stem: f for f in sorted(Path(cards_dir).glob("*.json"))}
    committed: dict[str, dict] = {}
    in_git = repo_dir is not None and (Path(repo_dir) / ".git").exists()
    if in_git:
        from studbook.repository.review import cards_at

        try:
            committed = cards_at("HEAD", str(repo_dir))
        except StudbookError:  # a repository without commits yet
            committed = {}
    from studbook.repository.card_files import parse_card

    cards = list(committed.values()) + [parse_card(f.read_bytes(), file=f.as_posix())
                                        for stem, f in on_disk.items() if stem not in committed]
    members = from_cards(cards)
    if in_git and committed:
        for name, info in arrivals(repo_dir).items():
            if name in members:
                members[name].arrived = info
    return members


def from_cards(cards: list[dict]) -> dict[str, Member]:
    """Members and their edges from card twins (no git)."""
    members = {card["name"]: _member(card) for card in cards}
    by_sha = {m.sha256: m.name for m in members.values()}
    for member in members.values():
        for parent in member.parents:
            if not parent.get("sha256") and parent["name"] == REFERENCE:
                continue  # a founder's know-nothing reference: not a member, not missing
            owner = by_sha.get(parent["sha256"]) if parent.get("sha256") else None
            if owner is None and parent["name"] in members and parent["name"] != member.name:
                owner = parent["name"]  # re-bred with other weights since: same member, drifted
                parent["drifted"] = True
            if owner is not None:
                parent["name"], parent["edge"] = owner, True  # identity is content: follow the hash
                members[owner].children.append(member.name)
            else:
                parent["missing"] = True
    return members


def topological(members: dict[str, Member]) -> list[str]:
    """Parents before children; ties broken by name (stable output). Kahn's algorithm."""
    import heapq

    waiting = {name: len({p for p in m.parent_names if p in members}) for name, m in members.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for child in set(members[name].children):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    if len(order) != len(members):
        cycle = sorted(n for n, count in waiting.items() if count)
        raise StudbookError(f"the lineage has a cycle through {', '.join(cycle[:5])}")
    return order


def related(members: dict[str, Member], name: str) -> tuple[list[str], list[str]]:
    """(ancestors, descendants) of one member, each in topological order."""
    if name not in members:
        raise StudbookError(f"no member named '{name}' (known: {', '.join(sorted(members)) or 'none'})",
                            file=f"cards/{name}.json")
    up, stack = set(), [name]
    while stack:
        for parent in members[stack.pop()].parent_names:
            if parent in members and parent not in up:
                up.add(parent)
                stack.append(parent)
    down, stack = set(), [name]
    while stack:
        for child in members[stack.pop()].children:
            if child not in down:
                down.add(child)
                stack.append(child)
    order = topological(members)
    return [n for n in order if n in up], [n for n in order if n in down]


def _line(member: Member) -> str:
    where = ""
    if member.arrived:
        where = f"  {member.arrived['commit'][:8]} {member.arrived['date'][:10]} {member.arrived['author']}"
        if member.arrived["merge"]:
            where += f" via {member.arrived['merge']['commit'][:8]} ({member.arrived['merge']['subject']})"
    mark = "" if member.verdict == "promoted" else " ✗"
    return terminal(f"{member.name}{mark} [{member.kind}, {member.method}, {member.verdict}] "
                    f"{member.primary:.4f} bits/byte, net gain {member.net_gain:+.4f}, "
                    f"{member.flops:.3g} FLOP{where}")


def _missing_line(name: str, sha256: str | None) -> str:
    pinned = f", weights {sha256[:12]}…" if sha256 else ""
    return terminal(f"{name} [{MISSING}{pinned}]")


def missing_parents(members: dict[str, Member], names: list[str]) -> dict[str, dict]:
    """Parent name -> {"sha256", "children"} for every parent that the members in `names`
    name but no card matches, in order of first mention."""
    found: dict[str, dict] = {}
    for name in names:
        for parent in members[name].missing_parents:
            entry = found.setdefault(parent["name"], {"sha256": parent.get("sha256"), "children": []})
            entry["children"].append(name)
    return found


def _tree_parent(member: Member, chosen: set[str]) -> tuple[str, bool] | None:
    """Where a member hangs in the text tree: under its first parent shown, else under its
    first missing parent's placeholder (name, True), else at the top (None)."""
    shown = [p for p in member.parent_names if p in chosen]
    if shown:
        return shown[0], False
    return (member.missing_parents[0]["name"], True) if member.missing_parents else None


def text_tree(members: dict[str, Member], names: list[str] | None = None) -> str:
    """Each member under its first parent; other parents named with 'also from'; a parent
    without a card is a placeholder line of its own."""
    names = names if names is not None else topological(members)
    chosen = set(names)
    lines: list[str] = []

    def walk(name: str, depth: int) -> None:
        member = members[name]
        others = [terminal(p) for p in member.parent_names if p in chosen]
        others += [f"{terminal(p['name'])} ({MISSING})" for p in member.missing_parents]
        others = others[1:] if others and _tree_parent(member, chosen) else others
        suffix = f"  (also from {', '.join(others)})" if others else ""
        lines.append("  " * depth + ("└─ " if depth else "") + _line(member) + suffix)
        for child in sorted(member.children):
            if child in chosen and _tree_parent(members[child], chosen) == (name, False):
                walk(child, depth + 1)

    missing = missing_parents(members, names)
    for name in names:
        place = _tree_parent(members[name], chosen)
        if place is None:
            walk(name, 0)
        elif place[1] and place[0] in missing:  # the placeholder, then all it holds
            entry = missing.pop(place[0])
            lines.append(_missing_line(place[0], entry["sha256"]))
            for child in entry["children"]:
                if _tree_parent(members[child], chosen) == (place[0], True):
                    walk(child, 1)
    return "\n".join(lines) + "\n"


def mermaid(members: dict[str, Member], names: list[str] | None = None) -> str:
    """A Mermaid flowchart (GitHub renders it); rejected members dashed and red, parents
    without a card dotted and grey. Every label is escaped (`escaping.mermaid_label`) and
    no `click` or link statement is ever written: names come from untrusted cards."""
    names = names if names is not None else topological(members)
    chosen = set(names)
    lines = ["```mermaid", "graph TD"]
    for name in names:
        m = members[name]
        lines.append(f'  {mermaid_id(name)}["{mermaid_label(name)}<br/>{mermaid_label(m.method)} · '
                     f'{m.primary:.4f} bits/byte<br/>{mermaid_label(m.verdict)}"]')
    missing = missing_parents(members, names)
    for name in missing:
        lines.append(f'  {mermaid_id(name, "m_")}["{mermaid_label(name)}<br/>{MISSING}"]')
    for name in names:
        for parent in members[name].parent_names:
            if parent in chosen:
                lines.append(f"  {mermaid_id(parent)} --> {mermaid_id(name)}")
    for name, entry in missing.items():
        lines += [f"  {mermaid_id(name, 'm_')} -.-> {mermaid_id(child)}" for child in entry["children"]]
    rejected = [mermaid_id(n) for n in names if members[n].verdict != "promoted"]
    lines.append("  classDef rejected stroke:#c00,stroke-dasharray:4 3,color:#900")
    if rejected:
        lines.append(f"  class {','.join(rejected)} rejected")
    if missing:
        lines.append("  classDef missing stroke:#888,stroke-dasharray:2 2,color:#666")
        lines.append(f"  class {','.join(mermaid_id(n, 'm_') for n in missing)} missing")
    lines.append("```")
    return "\n".join(lines) + "\n"


def as_json(members: dict[str, Member], names: list[str] | None = None) -> dict:
    """Nodes and edges; a parent without a card is a node `{"missing": true, "note": …}`
    and its edges carry `"missing": true`."""
    names = names if names is not None else topological(members)
    chosen = set(names)
    missing = missing_parents(members, names)
    return {
        "nodes": [{"name": n, "sha256": members[n].sha256, "kind": members[n].kind,
                   "method": members[n].method, "verdict": members[n].verdict,
                   "primary": members[n].primary, "net_gain": members[n].net_gain,
                   "tokens": members[n].tokens, "flops": members[n].flops,
                   "arrived": members[n].arrived} for n in names]
                 + [{"name": p, "sha256": e["sha256"], "missing": True, "note": MISSING}
                    for p, e in missing.items()],
        "edges": [{"parent": p, "child": n, "sha256": members[p].sha256}
                  for n in names for p in members[n].parent_names if p in chosen]
                 + [{"parent": p, "child": c, "sha256": e["sha256"], "missing": True}
                    for p, e in missing.items() for c in e["children"]],
    }


def cumulative(members: dict[str, Member], name: str) -> dict[str, float]:
    """Compute spent on a member and every ancestor (each counted once)."""
    ancestors, _ = related(members, name)
    path = ancestors + [name]
    return {"generations": len(path),
            "tokens": sum(members[n].tokens for n in path),
            "flops": sum(members[n].flops for n in path),
            "seconds": sum(members[n].seconds for n in path)}
