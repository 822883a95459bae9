"""Everything a reviewer reads is escaped for its medium (issue 13), as defence in depth
behind `parse_card`: the escaping functions, one per medium, on the issue's injection
strings; then the render functions fed hostile cards directly (bypassing parse_card)
must write no live `<img`, no Mermaid `click`, no label-closing `"]`, no link.
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT
from studbook.core import escaping

MERMAID_CLICK = 'x"]\n  click n_x "javascript:alert(1)"\n  y["'
IMG = "<img src=x onerror=alert(1)>"
LINK = "[link](javascript:alert(1))"
PIPE = "a | b"
ANSI = "\x1b[2J\x1b]8;;javascript:alert(1)\x07x"
INJECTIONS = [MERMAID_CLICK, IMG, LINK, PIPE, ANSI, "\\|", "`code`", 'a"]b']


def unescaped(text: str, char: str) -> int:
    """How many `char` in Markdown `text` are not backslash-escaped."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*" + re.escape(char), text)) if char in text else 0


@pytest.mark.parametrize("text", INJECTIONS)
def test_markdown_text_is_inert(text):
    out = escaping.markdown(text)
    assert "<" not in out and ">" not in out  # no HTML tag can open
    assert "\n" not in out and "\x1b" not in out
    for char in "|`[]":
        assert unescaped(out, char) == 0, (char, out)


@pytest.mark.parametrize("text", INJECTIONS)
def test_only_plain_identifiers_go_into_code_spans(text):
    assert escaping.markdown_code(text) == escaping.markdown(text)  # escaped text, no span
    assert escaping.markdown_code("pico-lora") == "`pico-lora`"
    assert escaping.markdown_code("origin/main~2") == "`origin/main~2`"


@pytest.mark.parametrize("text", INJECTIONS)
def test_mermaid_label_cannot_close_or_add_a_statement(text):
    out = escaping.mermaid_label(text)
    assert '"' not in out and "<" not in out and ">" not in out and "\n" not in out
    assert re.fullmatch(r"n_\w+", escaping.mermaid_id(text))


@pytest.mark.parametrize("text", INJECTIONS)
def test_terminal_and_rich_text_show_control_characters_and_markup_literally(text):
    from rich.text import Text

    plain = escaping.terminal(text)
    assert not re.search(r"[\x00-\x1f\x7f]", plain)
    assert Text.from_markup(escaping.rich_text(text)).plain == plain  # no markup applied


def hostile_card(name: str, parent: dict | None = None) -> dict:
    """A card whose free-text fields all carry injections (as no parse_card would let by)."""
    card = json.loads((ROOT / "cards/founder.json").read_text())
    card.update({"name": name, "method": IMG, "verdict": MERMAID_CLICK, "kind": LINK,
                 "reference_parent": MERMAID_CLICK, "weights_sha256": sha(name),
                 "parents": [parent or {"name": "uniform-byte", "sha256": None, "reference": True}]})
    card["primary"]["metric"] = LINK
    for bench in card["benchmarks"]:
        bench.update(task=f"{PIPE} {LINK}", metric=IMG)
        for row in bench["parents"]:
            row["parent"] = MERMAID_CLICK
    return card


def sha(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


def assert_inert_markdown(text: str) -> None:
    live = text.split("```mermaid", 1)[0]
    assert "<" not in live and ">" not in live  # no tag at all, let alone a live <img
    assert not re.search(r"(?<!\\)\]\(", live)  # no link target: `](` only escaped
    assert not re.search(r"^\s*click ", text, re.M)
    for block in re.split(r"\n(?!\|)", live):  # each table: every row has the header's columns
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({unescaped(row, "|") for row in rows}) <= 1, rows


def assert_inert_mermaid(text: str) -> None:
    block = text.split("```mermaid\n", 1)[1].split("```", 1)[0]
    for line in block.splitlines()[1:]:  # after `graph TD`: nodes (our own `<br/>` the only
        # tag), edges, classes; nothing else, so no `click`, no link, no closed label
        assert re.fullmatch(r'  [nm]_\w+\["(?:[^"<>]|<br/>)*"\]|  [nm]_\w+ -(->|\.->) n_\w+|'
                            r"  classDef \w+ [^\"]*|  class [\w,]+ \w+", line), line


def test_the_card_diff_renders_hostile_cards_inert():
    from studbook.repository.review import compare, render

    head = {IMG: hostile_card(IMG),
            MERMAID_CLICK: hostile_card(MERMAID_CLICK, {"name": IMG, "sha256": sha(IMG)}),
            LINK: hostile_card(LINK, {"name": PIPE, "sha256": sha(PIPE)})}
    text = render(compare({}, head), LINK, IMG, head)
    assert "## added:" in text and "## Lineage of the new members" in text
    assert_inert_markdown(text)
    assert_inert_mermaid(text)


def test_lineage_renders_hostile_cards_inert():
    from studbook.repository.lineage import MISSING, as_json, from_cards, mermaid, text_tree

    members = from_cards([hostile_card(IMG), hostile_card(ANSI, {"name": IMG, "sha256": sha(IMG)}),
                          hostile_card(MERMAID_CLICK, {"name": LINK, "sha256": sha(LINK)})])
    chart = mermaid(members)
    assert_inert_mermaid(chart)
    assert chart.count(" --> ") == 1 and chart.count(" -.-> ") == 1  # the edge, the missing parent
    tree = text_tree(members)
    assert "\x1b" not in tree and not re.search(r"[\x00-\x09\x0b-\x1f]", tree)
    assert len(tree.splitlines()) == 4  # three members and one parent without a card
    assert tree.splitlines()[2] == f"{LINK} [{MISSING}, weights {sha(LINK)[:12]}…]"
    assert json.dumps(as_json(members))  # JSON escapes for itself


def test_the_population_table_prints_markup_literally(tmp_path, monkeypatch):
    """`population` prints through rich markup: a member's fields are shown as written."""
    from typer.testing import CliRunner

    from studbook import cli
    from studbook.repository import population

    card = hostile_card("x")
    card.update(method="[link=x]y[/]", contract="[red]c[/]", kind="\x1b[31mk")
    monkeypatch.setattr(population, "members", lambda cards_dir="cards": [card])
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli.app, ["population"])
    assert done.exit_code == 0, done.output
    assert "[link=x]y[/]" in done.output and "[red]c[/]" in done.output
    assert "\x1b" not in done.output and "\\x1b[31mk" in done.output


def test_terminal_reports_show_control_characters_as_escapes(tmp_path, monkeypatch):
    """`negatives`, `show` and `drift` print card fields to a terminal: no escape sequence
    reaches it (a tab and the line structure of a card are kept)."""
    from typer.testing import CliRunner

    from studbook import cli
    from studbook.repository import population
    from studbook.repository.drift import member_drift, render

    card = hostile_card("x")
    card.update(verdict="rejected", reasons=[ANSI], method="\x1b[31mred")
    monkeypatch.setattr(population, "members", lambda cards_dir="cards": [card])
    monkeypatch.setattr(population, "member", lambda name, cards_dir="cards": card)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards/x.md").write_text("# x\n\tindented\n\x1b[2Jgone\n")
    runner = CliRunner()
    negatives = runner.invoke(cli.app, ["negatives"])
    assert negatives.exit_code == 0 and "\x1b" not in negatives.output
    assert "\\x1b[31mred" in negatives.output and "\\x1b]8;;javascript:alert(1)\\x07x" in negatives.output
    shown = runner.invoke(cli.app, ["show", "x", "--raw"])
    assert shown.output == "# x\n\tindented\n\\x1b[2Jgone\n"
    rendered = runner.invoke(cli.app, ["show", "x"])  # rich Markdown: the escapes stay visible
    assert rendered.exit_code == 0 and "\x1b" not in rendered.output and "\\x1b[2Jgone" in rendered.output
    report = member_drift({**card, "numerics": {"mode": ANSI}}, {"weights_sha256": "0"}, None)
    assert "\x1b" not in render([report]) and "\\x1b[2J" in render([report])
