"""Graph faults (issue 13): a parent without a card is shown, never silently dropped; a
parent cycle made by editing a recipe is refused by `refresh`, `propose --refresh`,
`propose` and `check` — naming a recipe of the cycle and its `parents` key, listing the
cycle — before anything is written (the check itself lives in `load_generation`, which
all of them call).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run
from studbook.core.errors import StudbookError

PY = sys.executable
NOTE = "no card (not bred or card missing)"


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def card(name: str, *parents: str) -> dict:
    """A real card's shape (the committed founder's), with its own weights and parents."""
    data = json.loads((ROOT / "cards/founder.json").read_text())
    data.update(name=name, weights_sha256=sha(name),
                parents=[{"name": p, "sha256": sha(p)} for p in parents]
                or [{"name": "uniform-byte", "sha256": None, "reference": True}])
    return data


# ---- a parent without a card ----

def test_a_parent_without_a_card_is_a_node_in_text_mermaid_and_json():
    from studbook.repository.lineage import as_json, from_cards, mermaid, related, text_tree

    members = from_cards([card("founder"), card("child", "ghost"), card("mixed", "founder", "ghost")])
    tree = text_tree(members).splitlines()
    assert tree[0] == f"ghost [{NOTE}, weights {sha('ghost')[:12]}…]"
    assert tree[1].startswith("  └─ child [")
    assert tree[2].startswith("founder [model, scratch, promoted]")
    assert tree[3].startswith("  └─ mixed [") and tree[3].endswith(f"(also from ghost ({NOTE}))")
    assert len(tree) == 4
    chart = mermaid(members)
    assert f'  m_ghost["ghost<br/>{NOTE}"]' in chart
    assert "  m_ghost -.-> n_child" in chart and "  m_ghost -.-> n_mixed" in chart
    assert "  class m_ghost missing" in chart
    graph = as_json(members)
    assert {"name": "ghost", "sha256": sha("ghost"), "missing": True, "note": NOTE} in graph["nodes"]
    assert {"parent": "ghost", "child": "child", "sha256": sha("ghost"), "missing": True} in graph["edges"]
    # one member's lineage shows it too
    ancestors, descendants = related(members, "child")
    assert f"ghost [{NOTE}" in text_tree(members, ancestors + ["child"] + descendants)


def test_the_lineage_command_shows_the_missing_parent(tmp_path):
    repo = tmp_path / "repo"
    (repo / "cards").mkdir(parents=True)
    (repo / "cards/child.json").write_text(json.dumps(card("child", "ghost")))
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "-c", "user.email=t@studbook.invalid", "-c", "user.name=t", "commit", "-qm", "child",
         "--allow-empty"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.email=t@studbook.invalid", "-c", "user.name=t", "commit", "-qm", "child"], repo)
    text = run([PY, "-m", "studbook.cli", "lineage", "child"], repo).stdout
    assert text.splitlines()[0] == f"ghost [{NOTE}, weights {sha('ghost')[:12]}…]"
    assert text.splitlines()[1].startswith("  └─ child [")
    mermaid = run([PY, "-m", "studbook.cli", "lineage", "--format", "mermaid"], repo).stdout
    assert "m_ghost -.-> n_child" in mermaid
    nodes = json.loads(run([PY, "-m", "studbook.cli", "lineage", "--format", "json"], repo).stdout)["nodes"]
    assert [n["name"] for n in nodes if n.get("missing")] == ["ghost"]


# ---- a parent cycle through a recipe edit ----

PICO = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}


@pytest.fixture
def family(skeleton: Path) -> Path:
    """x (scratch) -> a (finetune of x) -> b (finetune of a), proposed; then a's recipe
    edited to name b as its parent: a cycle a -> b -> a."""
    from studbook.repository.proposal import propose

    propose("x", "scratch", [], 0, PICO)
    propose("a", "finetune", ["x"], 0, {**PICO, "model": "inherited"})
    propose("b", "finetune", ["a"], 0, {**PICO, "model": "inherited"})
    recipe = skeleton / "generations/a/recipe.yaml"
    recipe.write_text(recipe.read_text().replace("parents: [x]", "parents: [b]"))
    return skeleton


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def assert_cycle_refused(error: StudbookError, *members: str) -> None:
    """Named: a recipe of the cycle, its `parents` key, and the cycle itself."""
    members = members or ("a", "b")
    assert error.file in {f"generations/{m}/recipe.yaml" for m in members}, error
    assert error.key.startswith("parents"), error
    loops = {" → ".join(members[i:] + members[:i] + members[i:i + 1]) for i in range(len(members))}
    assert any(loop in error.detail for loop in loops), (loops, error)


def test_refresh_refuses_a_cycle_and_writes_nothing(family):
    from studbook.repository.proposal import refresh_all

    before = snapshot(family)
    for names in (None, ["b"], ["a"]):
        with pytest.raises(StudbookError) as info:
            refresh_all(names, family)
        assert_cycle_refused(info.value)
        assert snapshot(family) == before


def test_propose_refresh_refuses_a_cycle_and_writes_nothing(family):
    from studbook.repository.proposal import propose

    before = snapshot(family)
    with pytest.raises(StudbookError) as info:
        propose("a", "finetune", ["b"], 0, PICO, refresh=True)
    assert_cycle_refused(info.value)
    assert snapshot(family) == before


def test_the_commands_name_the_recipe_key_and_cycle(family):
    before = snapshot(family)
    for command in (["refresh"], ["check", "b"], ["check"]):
        done = run([PY, "-m", "studbook.cli", *command], family, check=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert re.search(r"generations/[ab]/recipe\.yaml: parents(\[0\])?: ", done.stderr), done.stderr
        assert "a → b → a" in done.stderr or "b → a → b" in done.stderr
    assert snapshot(family) == before


def test_a_new_generation_cannot_close_a_cycle(skeleton):
    """An existing recipe naming a generation not proposed yet, then that generation
    proposed as its child: refused, and its folder not left behind."""
    from studbook.repository.proposal import propose

    propose("x", "scratch", [], 0, PICO)
    propose("a", "finetune", ["x"], 0, {**PICO, "model": "inherited"})
    recipe = skeleton / "generations/a/recipe.yaml"
    recipe.write_text(recipe.read_text().replace("parents: [x]", "parents: [late]"))
    before = snapshot(skeleton)
    with pytest.raises(StudbookError) as info:
        propose("late", "finetune", ["a"], 0, {**PICO, "model": "llama_pico"})
    assert_cycle_refused(info.value, "late", "a")
    assert snapshot(skeleton) == before


def test_a_diamond_is_not_a_cycle(skeleton):
    from studbook.repository.proposal import propose, refresh_all

    propose("x", "scratch", [], 0, PICO)
    for name in ("a", "b"):
        propose(name, "finetune", ["x"], 0, {**PICO, "model": "inherited"})
    propose("d", "linear", ["a", "b"], 0, {**PICO, "model": "inherited", "train": "none"})
    refresh_all(["d"], skeleton)  # x -> a, b -> d: shared ancestry, no cycle
