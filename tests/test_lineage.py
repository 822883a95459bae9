"""Lineage on a synthetic git history: edges by content hash, arrivals through merges."""

from __future__ import annotations

import json

import pytest

from studbook.core.errors import StudbookError
from studbook.repository.lineage import as_json, cumulative, from_cards, load, mermaid, related, text_tree, topological

from synthetic import card, sha, synthetic_history


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    repo = tmp_path_factory.mktemp("lineage") / "repo"
    edges = synthetic_history(repo, 120, merge_every=10)
    return repo, edges


def test_edges_are_the_cards_parents(history, monkeypatch):
    repo, edges = history
    monkeypatch.chdir(repo)
    members = load()
    graph = as_json(members)
    assert len(graph["nodes"]) == 120
    got = sorted((e["parent"], e["child"]) for e in graph["edges"])
    assert got == sorted((p, child) for child, parents in edges.items() for p in parents)
    assert all(e["sha256"] == sha(e["parent"]) for e in graph["edges"])
    order = topological(members)
    position = {name: i for i, name in enumerate(order)}
    assert all(position[p] < position[c] for p, c in got)


def test_arrivals_name_the_commit_and_the_merge(history, monkeypatch):
    repo, _ = history
    monkeypatch.chdir(repo)
    members = load()
    for index in range(120):
        arrived = members[f"g{index}"].arrived
        assert arrived["subject"] == f"g{index}: bred" and arrived["author"] == f"Breeder {index % 3}"
        if index and index % 10 == 0:
            assert arrived["merge"]["subject"] == f"Merge pull request #{index}"
        else:
            assert arrived["merge"] is None


def test_one_member_ancestry_descendants_and_cost(history, monkeypatch):
    repo, edges = history
    monkeypatch.chdir(repo)
    members = load()
    ancestors, descendants = related(members, "g30")
    expected, stack = set(), ["g30"]
    while stack:
        for parent in edges[stack.pop()]:
            if parent not in expected:
                expected.add(parent)
                stack.append(parent)
    assert set(ancestors) == expected and "g0" in ancestors
    assert all("g30" in related(members, d)[0] for d in descendants)
    total = cumulative(members, "g30")
    assert total["generations"] == len(expected) + 1 and total["tokens"] == 1000 * total["generations"]
    text = text_tree(members, ancestors + ["g30"] + descendants)
    assert text.splitlines()[0].startswith("g0 [model, scratch, promoted]")
    chart = mermaid(members)
    assert chart.count(" --> ") == sum(len(p) for p in edges.values())
    with pytest.raises(StudbookError, match="no member named 'g999'"):
        related(members, "g999")


def test_identity_is_content_not_name():
    import random

    rng = random.Random(0)
    parent, child = card(0, [], rng), card(1, [0], rng)
    parent["name"] = "renamed"  # same weights, new name: the edge follows the hash
    members = from_cards([parent, child])
    assert members["g1"].parent_names == ["renamed"] and members["renamed"].children == ["g1"]
    looped = card(2, [3], rng), card(3, [2], rng)
    with pytest.raises(StudbookError, match="cycle"):
        topological(from_cards(list(looped)))
    assert json.dumps(as_json(members))  # serialisable


def test_lineage_survives_a_rebase(tmp_path, monkeypatch):
    import subprocess

    repo = tmp_path / "repo"
    synthetic_history(repo, 12, merge_every=100)

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout

    for key, value in {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
                       "GIT_COMMITTER_EMAIL": "b@x"}.items():
        monkeypatch.setenv(key, value)
    git("checkout", "-q", "-b", "feature", "HEAD~2")  # a branch from an older main
    import random

    (repo / "cards" / "g99.json").write_text(json.dumps(card(99, [5, 9], random.Random(1))))
    git("add", "-A")
    git("commit", "-qm", "g99: bred")
    git("rebase", "-q", "main")
    monkeypatch.chdir(repo)
    members = load()
    assert members["g99"].parent_names == ["g5", "g9"]
    assert members["g99"].arrived["commit"] == git("rev-parse", "HEAD").strip()  # the rebased commit
    assert len(members) == 13
