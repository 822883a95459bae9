"""`studbook site` without a browser (the browser test is in test_ecology_slow.py): the
pages it writes from the committed cards and dvclive logs, byte-identical on a rebuild,
self-contained (nothing loaded from anywhere), card text kept as text, and the output
folder written atomically without replacing what is not a site.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT

SHIPPED = sorted(p.stem for p in (ROOT / "cards").glob("*.json"))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The committed cards (no evidence: unverified) and two generations' training logs."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "cards", repo / "cards")
    for name, start in (("founder", 4.0), ("student", 4.4)):
        train = repo / "generations" / name / "live/plots/metrics/train"
        train.mkdir(parents=True)
        (train / "loss.tsv").write_text("step\tloss\n" + "".join(
            f"{step}\t{start / (1 + step / 20):.6f}\n" for step in range(0, 200, 10)))
    monkeypatch.chdir(repo)
    return repo


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_site_has_every_part_and_rebuilds_byte_identical(repo, tmp_path):
    from studbook.repository.site import build

    facts = build(tmp_path / "site")
    site = files(tmp_path / "site")
    assert facts["pages"] == len(site) == 2 + len(SHIPPED)
    assert sorted(site) == sorted(["index.html", "negatives.html", *(f"cards/{n}.html" for n in SHIPPED)])
    index = site["index.html"].decode()
    for name in SHIPPED:
        assert re.search(f'<g class="node (promoted|rejected)" data-name="{name}">', index)  # a node each
        assert f'<a href="cards/{name}.html">{name}</a>' in index  # a table row each
    assert index.count('<path class="edge') >= len(SHIPPED) - 1
    assert index.count('class="curve" data-generation="founder"') == 1
    assert index.count('class="curve" data-generation="student"') == 1
    assert 'aria-label="bits_per_byte per niche"' in index and 'aria-label="acc per niche"' in index
    founder = site["cards/founder.html"].decode()
    assert "<h1>founder</h1>" in founder and "<table>" in founder and "library_name" not in founder
    rejected = [json.loads((repo / "cards" / f"{n}.json").read_text()) for n in SHIPPED]
    rejected = [c for c in rejected if c["verdict"] != "promoted"]
    negatives = site["negatives.html"].decode()
    for card in rejected:
        assert f'<a href="cards/{card["name"]}.html">{card["name"]}</a>' in negatives

    build(tmp_path / "again")
    assert files(tmp_path / "again") == site  # same repository, same bytes
    build(tmp_path / "site")  # an earlier site is replaced
    assert files(tmp_path / "site") == site
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []


def test_the_site_loads_nothing_and_keeps_card_text_as_text(repo, tmp_path):
    from studbook.repository.site import build

    card = repo / "cards/founder.md"
    card.write_text(card.read_text() + "\n<script>alert(1)</script> [x](javascript:alert(2)) "
                    "<img src=x onerror=alert(3)>\n")
    build(tmp_path / "site")
    for rel, data in files(tmp_path / "site").items():
        page = data.decode()
        assert "default-src 'none'" in page, rel  # the browser is told: nothing from anywhere
        assert not re.search(r"<(link|iframe|object|embed|img|audio|video|source)\b", page), rel
        assert not re.search(r"<[^>]*\bsrc=|(href|src)=[\"']?(https?:)?//", page), rel
        assert page.count("<script") == 1, rel  # the inlined sorter, nothing a card brought
        assert " style=" not in page, rel  # the policy allows no style attribute (a table's alignment is a class)
    founder = (tmp_path / "site/cards/founder.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in founder and 'href="javascript:' not in founder


def test_the_site_never_replaces_what_is_not_a_site(repo, tmp_path):
    from typer.testing import CliRunner

    from studbook.cli import app

    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    done = CliRunner().invoke(app, ["site", str(other)])
    assert done.exit_code == 2 and "is not a studbook site; pass --replace" in done.output
    assert (other / "keep.txt").read_text() == "mine"
    done = CliRunner().invoke(app, ["site", "."])
    assert done.exit_code == 2 and "would replace the repository" in done.output
    done = CliRunner().invoke(app, ["site", str(other), "--replace"])
    assert done.exit_code == 0, done.output
    assert not (other / "keep.txt").exists() and (other / "index.html").is_file()
    lines = done.output.strip().splitlines()
    assert lines[0] == f"site: {other.as_posix()}" and re.fullmatch(r"index: .+/index\.html", lines[-1])
    assert "Usage:" in CliRunner().invoke(app, ["site", "--help"]).output


def test_a_score_axis_where_every_member_has_the_same_score_stays_in_range():
    """Found in the Chromium screenshot: five pico members all at accuracy 0 drew an axis
    from -0.6 to 0.6. A score no member is below 0 gets an axis from 0."""
    import re

    from studbook.repository.site_svg import scores, styles

    members = ["founder", "tests-lora"]
    for value, top in ((0.0, 1.0), (0.25, 0.4)):
        svg = scores([{"niche": "general", "scores": [(m, value, m) for m in members]}], styles(members), "acc")
        labels = [float(t) for t in re.findall(r'<text class="tick"[^>]*>([-0-9.]+)</text>', svg)]
        assert labels[0] == 0.0 and min(labels) >= 0 and max(labels) >= top * 0.999
        assert svg.count('class="score"') == 2
