"""The demo ecology command on pico models: founder -> adapters -> merge -> student.

Slow (about five minutes): `pytest -m slow`. Real git clone, real `dvc repro` for each
generation, one commit per generation, population printed at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_skeleton, git_dvc_init, run

PY = sys.executable


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ecology(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The pico ecology bred by `studbook demo` (once for the module): the clone and the run."""
    tmp_path = tmp_path_factory.mktemp("ecology")
    source = copy_skeleton(tmp_path / "source")
    git_dvc_init(source)
    clone = tmp_path / "clone"
    result = run([PY, "-m", "studbook.cli", "demo", "--ecology", "pico", "--dir", str(clone)],
                 source, timeout=1800)
    return clone, result


def test_demo_builds_the_pico_ecology_one_commit_per_generation(ecology):
    clone, result = ecology
    names = ["founder", "tests-lora", "general-lora", "specialist", "student"]
    log = run(["git", "log", "--format=%s"], clone).stdout.splitlines()
    assert len(log) == len(names) + 1 and all(any(l.startswith(n + ":") for l in log) for n in names)
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
    rows = {r["name"]: r for r in json.loads(run([PY, "-m", "studbook.cli", "population", "--json"],
                                                 clone).stdout)}
    assert sorted(rows) == sorted(names)
    assert rows["tests-lora"]["kind"] == "adapter" and rows["specialist"]["method"] == "ties"
    assert rows["student"]["method"] == "distill" and len(rows["student"]["parents"]) == 1
    assert any(r["verdict"] == "promoted" for n, r in rows.items() if n != "founder")
    for name in names:
        assert f"generation: {name} verdict:" in result.stderr
        assert (clone / "cards" / f"{name}.md").is_file()
    assert "wall_seconds:" in result.stdout
    # the whole studbook is reproducible from its commits: nothing left to run
    status = run([PY, "-m", "dvc", "status"], clone).stdout
    assert "up to date" in status


def chromium() -> str:
    """The system Chromium (Debian's `chromium`; Playwright's own browser download is not
    used). Missing, the test fails — never skips — saying how to install it."""
    import os
    import shutil

    found = os.environ.get("STUDBOOK_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if not found:
        pytest.fail("no Chromium to open the site with: `apt-get install -y chromium` as root "
                    "(scripts/setup.sh does it when it runs as root), or STUDBOOK_CHROMIUM=/path/to/chrome")
    return found


def test_the_site_shows_the_lineage_the_sortable_table_and_overlaid_curves_in_chromium(
        ecology, tmp_path, capsys):
    """`studbook site` on the bred ecology, opened in a real headless Chromium: the lineage's
    nodes and edges are drawn, clicking a header sorts the table, the training curves of
    every generation that trained are overlaid on one chart; nothing is fetched and no
    script error or policy violation is logged. The screenshot is kept and its path printed."""
    import os

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (scripts/setup.sh)")
    clone, _ = ecology
    out = tmp_path / "site"
    done = run([PY, "-m", "studbook.cli", "site", str(out)], clone)
    assert f"site: {out.as_posix()}" in done.stdout and "pages: 7" in done.stdout
    run([PY, "-m", "studbook.cli", "site", str(tmp_path / "again")], clone)
    assert all((tmp_path / "again" / p.relative_to(out)).read_bytes() == p.read_bytes()
               for p in out.rglob("*.html"))  # the same repository, the same bytes

    members = sorted(r["name"] for r in json.loads(run([PY, "-m", "studbook.cli", "population", "--json"],
                                                      clone).stdout))
    graph = json.loads(run([PY, "-m", "studbook.cli", "lineage", "--format", "json"], clone).stdout)
    trained = sorted(p.parts[-6] for p in clone.glob("generations/*/live/plots/metrics/train/loss.tsv"))
    assert len(trained) >= 3  # founder, the adapters and the student train; the merge does not
    shots = Path(os.environ.get("STUDBOOK_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])  # root in a container
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("request", lambda request: None if request.url.startswith("file://")
                else problems.append(f"fetched {request.url}"))
        page.goto((out / "index.html").as_uri())

        nodes = page.locator("#lineage svg g.node")
        assert sorted(nodes.evaluate_all("gs => gs.map(g => g.dataset.name)")) == members
        sizes = nodes.evaluate_all("gs => gs.map(g => { const b = g.getBBox(); return b.width * b.height; })")
        assert all(size > 1000 for size in sizes)  # drawn boxes, not empty groups
        edges = page.locator("#lineage svg path.edge").evaluate_all(
            "ps => ps.map(p => p.dataset.parent + '>' + p.dataset.child)")
        assert sorted(edges) == sorted(f"{e['parent']}>{e['child']}" for e in graph["edges"])

        def column(index: int, numeric: bool = True) -> list:
            values = page.locator(f"#population tbody tr td:nth-child({index})").evaluate_all(
                "tds => tds.map(td => td.dataset.value)")
            return [float(v) for v in values] if numeric else values
        header = page.locator("#population thead th", has_text="net gain")
        header.click()
        gains = column(7)
        assert gains == sorted(gains) and header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert column(7) == sorted(gains, reverse=True) and header.get_attribute("aria-sort") == "descending"
        page.locator("#population thead th", has_text="member").click()
        assert column(1, numeric=False) == sorted(members) and len(set(gains)) > 1

        chart = page.locator('#training figure[data-metric="train/loss"]')
        curves = chart.locator("path.curve")
        assert sorted(curves.evaluate_all("ps => ps.map(p => p.dataset.generation)")) == trained
        lengths = curves.evaluate_all("ps => ps.map(p => p.getTotalLength())")
        assert all(length > 100 for length in lengths)  # one drawn line per generation
        assert chart.locator("ul.legend li").all_inner_texts() == curves.evaluate_all(
            "ps => ps.map(p => p.dataset.generation)")
        assert page.locator("#scores svg g.score").count() == len(members) * 3  # stdlib_pico: 3 benchmarks
        page.locator("#lineage svg g.node").first.scroll_into_view_if_needed()
        shot = shots / "studbook-site.png"
        page.screenshot(path=str(shot), full_page=True)

        page.locator('#lineage g.node[data-name="student"] a').click()
        page.wait_for_url("**/cards/student.html")
        assert page.locator("article.card h1").inner_text() == "student"
        assert page.locator("article.card table").count() >= 3
        page.goto((out / "negatives.html").as_uri())
        assert page.locator("h1").inner_text() == "Negative results"
        browser.close()
    assert problems == []
    with capsys.disabled():
        print(f"\nscreenshot: {shot}")
