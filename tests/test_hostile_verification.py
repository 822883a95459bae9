"""Nothing is trusted that was not measured (issue 13): a card whose figures were edited by
hand is named as tampered — the field, the card's value and the measured one — by the
verification against its evidence (per-item evaluations, weights hash), is never chosen
by `--parents auto` nor marked best by `population`, and fails `card diff`; an untouched
card verifies, and a card whose evidence is not here is unverified with the command that
measures it.

One real pico generation is bred with `dvc repro`; `twin` is an exact copy of its
evidence under another name (an honest second member), whose card the tests edit.
"""

from __future__ import annotations

import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # breeds a pico member with dvc repro (about 80 s)

from conftest import bred_pico, run

PY = sys.executable
FAKE = 0.1  # bits per byte: better than any pico model can score


@pytest.fixture(scope="module")
def bred(tmp_path_factory) -> Path:
    repo = bred_pico(tmp_path_factory.mktemp("verify") / "studbook")[0]
    run(["git", "tag", "bred"], repo)
    # an honest second member: the same evidence under another name
    shutil.copytree(repo / "models/pico", repo / "models/twin")
    shutil.copytree(repo / "generations/pico/eval", repo / "generations/twin/eval")
    recipe = (repo / "generations/pico/recipe.yaml").read_text()
    (repo / "generations/twin/recipe.yaml").write_text(recipe.replace("name: pico", "name: twin"))
    card = json.loads((repo / "cards/pico.json").read_text())
    (repo / "cards/twin.json").write_text(json.dumps({**card, "name": "twin"}, indent=2, sort_keys=True))
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pico bred, and its twin"], repo)
    return repo


def faked(card: dict) -> dict:
    """The card with every bits-per-byte figure replaced by FAKE (what a hand edit does)."""
    card = json.loads(json.dumps(card))
    for bench in card["benchmarks"]:
        if bench["metric"] == "bits_per_byte":
            bench["value"] = FAKE
    card["primary"]["child"] = FAKE
    return card


@contextmanager
def tampered_twin(repo: Path):
    path = repo / "cards/twin.json"
    original = path.read_text()
    path.write_text(json.dumps(faked(json.loads(original)), indent=2, sort_keys=True))
    try:
        yield
    finally:
        path.write_text(original)


def verify(repo: Path, name: str, monkeypatch):
    from studbook.repository.verification import verify_card

    monkeypatch.chdir(repo)
    return verify_card(json.loads((repo / "cards" / f"{name}.json").read_text()))


def test_an_untouched_card_verifies(bred, monkeypatch):
    for name in ("pico", "twin"):
        check = verify(bred, name, monkeypatch)
        assert check.status == "verified", str(check)


def test_a_faked_score_is_named_tampered_with_card_and_measured_values(bred, monkeypatch):
    card = json.loads((bred / "cards/twin.json").read_text())
    first = next(i for i, b in enumerate(card["benchmarks"]) if b["metric"] == "bits_per_byte")
    with tampered_twin(bred):
        check = verify(bred, "twin", monkeypatch)
    assert check.status == "tampered"
    assert check.field == f"benchmarks[{first}].value"
    assert check.card == FAKE and check.measured == card["benchmarks"][first]["value"]
    assert str(check).startswith(f"tampered: benchmarks[{first}].value: card 0.100000, measured ")


@pytest.mark.parametrize("field,edit", [
    ("verdict", lambda c: c.update(verdict="rejected")),
    ("primary.net_gain.mean", lambda c: c["primary"]["net_gain"].update(mean=9.0)),
    ("weights_sha256", lambda c: c.update(weights_sha256="0" * 64)),
    ("benchmarks[0].parents[0].delta", lambda c: c["benchmarks"][0]["parents"][0].update(delta=-7.0)),
])
def test_every_figure_a_decision_reads_is_checked(bred, monkeypatch, field, edit):
    from studbook.repository.verification import verify_card

    monkeypatch.chdir(bred)
    card = json.loads((bred / "cards/twin.json").read_text())
    edit(card)
    check = verify_card(card)
    assert (check.status, check.field) == ("tampered", field), str(check)


def test_a_card_without_evidence_here_is_unverified_with_the_command(bred, monkeypatch):
    from studbook.repository.verification import verify_card

    monkeypatch.chdir(bred)
    card = {**json.loads((bred / "cards/pico.json").read_text()), "name": "elsewhere"}
    check = verify_card(card)
    assert check.status == "unverified"
    assert "`dvc repro generations/elsewhere/dvc.yaml`" in str(check)


def test_parents_auto_never_chooses_the_tampered_card(bred, monkeypatch):
    from studbook.repository.population import select_parents

    monkeypatch.chdir(bred)
    with tampered_twin(bred):
        chosen, selection = select_parents("lora", "stdlib_pico")
        reasons = {c["name"]: c["excluded"] for c in selection["candidates"]}
        assert chosen == ["pico"]  # the twin's faked 0.1 bits per byte would have ranked first
        assert reasons["twin"].startswith("tampered: benchmarks[") and "card 0.100000" in reasons["twin"]
        assert reasons["pico"] is None
        # through the command: the recipe names pico, and records why twin was not chosen
        done = run([PY, "-m", "studbook.cli", "propose", "child", "--method", "lora", "--parents", "auto",
                    "--parameters", "{rank: 4}", "--model", "llama_pico", "--train", "pico",
                    "--contract", "stdlib_pico"], bred)
        assert "parents (auto): pico" in done.stdout
        recipe = (bred / "generations/child/recipe.yaml").read_text()
        assert "parents: [pico]" in recipe and "tampered: benchmarks[" in recipe
    shutil.rmtree(bred / "generations/child")


def test_population_shows_tampered_and_never_marks_it_best(bred):
    rows = {r["name"]: r for r in json.loads(run([PY, "-m", "studbook.cli", "population", "--json"],
                                                 bred).stdout)}
    assert rows["pico"]["verification"]["status"] == rows["twin"]["verification"]["status"] == "verified"
    assert [n for n, r in rows.items() if r["best"]] == ["pico"]  # equal scores: the first by name
    with tampered_twin(bred):
        rows = {r["name"]: r for r in json.loads(run([PY, "-m", "studbook.cli", "population", "--json"],
                                                     bred).stdout)}
        table = run([PY, "-m", "studbook.cli", "population"], bred)
    assert rows["twin"]["verification"]["status"] == "tampered"
    assert rows["twin"]["verification"]["card"] == FAKE and rows["twin"]["primary"] == FAKE
    assert not rows["twin"]["best"] and rows["pico"]["best"]
    assert "TAMPERED" in table.stdout and "★ pico" in table.stdout and "★ twin" not in table.stdout
    assert "tampered: cards/twin.json disagrees with its evidence" in table.stderr


def test_card_diff_names_a_tampered_head_card_at_the_top_and_fails(bred):
    honest = run([PY, "-m", "studbook.cli", "card", "diff", "bred"], bred)  # twin added, as bred
    assert honest.returncode == 0 and "## added: `twin`" in honest.stdout
    assert "TAMPERED" not in honest.stdout and "Not verified" not in honest.stdout
    run(["git", "checkout", "-qb", "pr"], bred)
    try:
        with tampered_twin(bred):
            run(["git", "commit", "-qam", "twin re-scored (by hand)"], bred)
        for base in ("bred", "main"):  # twin added, then twin changed
            done = run([PY, "-m", "studbook.cli", "card", "diff", base], bred, check=False)
            assert done.returncode == 1, done.stdout + done.stderr
            lines = done.stdout.splitlines()
            assert lines[2].startswith("**⛔ TAMPERED: `twin` — its card disagrees with its evidence: "
                                       "`benchmarks[") and "`: card 0.100000, measured " in lines[2]
            assert "`pico`" not in lines[2] and "Traceback" not in done.stderr
    finally:
        run(["git", "checkout", "-qf", "main"], bred)
