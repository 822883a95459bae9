"""A pull request's cards are untrusted input (issue 13): injection strings, duplicate keys,
non-finite numbers, bombs and malformed JSON in a committed card are refused — naming
the file and the key — by every command a reviewer reads (`card diff`, `lineage`,
`population`), and never rendered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run

PY = sys.executable
MERMAID_CLICK = 'x"]\n  click n_founder "javascript:alert(1)"\n  y["'
IMG = "<img src=x onerror=alert(1)>"


def founder_card() -> dict:
    return json.loads((ROOT / "cards/founder.json").read_text())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with the committed founder's card on main."""
    repo = tmp_path / "repo"
    (repo / "cards").mkdir(parents=True)
    (repo / "cards/founder.json").write_text(json.dumps(founder_card(), indent=2))
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "t@studbook.invalid"], repo)
    run(["git", "config", "user.name", "t"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "founder"], repo)
    return repo


def propose_card(repo: Path, file: str, text: str) -> None:
    """A pull request that adds one card file, committed on a branch."""
    run(["git", "checkout", "-qb", "pr"], repo)
    (repo / "cards" / file).write_text(text)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a descendant"], repo)


def child(**changes) -> dict:
    card = founder_card()
    card.update({"name": "child", **changes})
    return card


CASES = {
    "mermaid-click-in-name": ("child.json", json.dumps(child(name=MERMAID_CLICK)), "name"),
    "html-in-name": ("child.json", json.dumps(child(name=IMG)), "name"),
    "name-differs-from-file": ("child.json", json.dumps(child(name="founder")), "name"),
    "html-in-method": ("child.json", json.dumps(child(method=IMG)), "method"),
    "html-in-parent": ("child.json", json.dumps(child(parents=[{"name": IMG, "sha256": None}])),
                       "parents[0].name"),
    "markdown-in-task": ("child.json", json.dumps(child(benchmarks=[
        {**founder_card()["benchmarks"][0], "task": "t | [x](javascript:alert(1))"}])), "benchmarks[0].task"),
    "duplicate-key": ("child.json", json.dumps(child())[:-1] + ', "verdict": "promoted"}', "verdict"),
    "nan-score": ("child.json", json.dumps(child(benchmarks=[  # json.dumps writes the literal NaN
        {**founder_card()["benchmarks"][0], "value": float("nan")}, *founder_card()["benchmarks"][1:]])), None),
    "malformed": ("child.json", '{"name": "child", ', None),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", [["card", "diff", "main", "pr"], ["lineage"], ["population"],
                                     ["lineage", "--format", "mermaid"]])
def test_a_hostile_card_is_refused_by_what_reviewers_read(repo, case, command):
    file, text, key = CASES[case]
    propose_card(repo, file, text)
    done = run([PY, "-m", "studbook.cli", *command], repo, check=False, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    assert f"cards/{file}" in output  # the file is named …
    if key:
        assert f": {key}" in output  # … and the key
    for fragment in ("javascript:", "onerror", "click n_"):
        assert fragment not in done.stdout


def test_a_card_bomb_is_refused_at_once(repo):
    import time

    card = child()
    card["padding"] = "x" * (2 << 20)
    propose_card(repo, "child.json", json.dumps(card))
    start = time.perf_counter()
    done = run([PY, "-m", "studbook.cli", "population"], repo, check=False, timeout=60)
    assert done.returncode == 2 and "larger than a card may be" in done.stderr + done.stdout
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("path,value", [
    (("primary", "child"), "0.1"), (("compute", "flops"), True), (("parameters",), [1]),
    (("primary", "net_gain", "mean"), {"a": 1}), (("primary",), "best")])
def test_a_figure_that_is_not_a_number_is_refused_naming_its_key(path, value):
    from studbook.core.errors import StudbookError
    from studbook.repository.card_files import parse_card

    card = {"name": "x", "parameters": 1, "primary": {"child": 1.0, "net_gain": {"mean": 0.1}},
            "compute": {"tokens": 1, "flops": 1.0, "seconds": 1.0}}
    target = card
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    with pytest.raises(StudbookError) as info:
        parse_card(json.dumps(card), file="cards/x.json")
    assert info.value.file == "cards/x.json"
    assert info.value.key in (".".join(path), ".".join(path[:1]))
