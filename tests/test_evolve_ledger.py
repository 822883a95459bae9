"""The ledger of a search (issue 14): every candidate kept whatever became of it, one
canonical line each, read back as untrusted input, and the search's figures derived."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run
from studbook.core.errors import StudbookError
from studbook.evolve import ledger


def row(trial: int, status: str, gain: float | None = None, **extra) -> dict:
    base = {"kind": "candidate", "trial": trial, "name": f"s-{trial:03d}", "status": status,
            "operator": "lora", "parents": ["founder"], "reference_parent": "founder"}
    if gain is not None:
        base["selection"] = {"net_gain": gain, "reasons": [f"net gain {gain:+.4f}"]}
    return {**base, **extra}


def timing(started: float, wall: float, train: float) -> dict:
    return {"timing": {"started": started, "finished": started + wall, "wall_seconds": wall,
                       "train_seconds": train}}


def test_rows_are_canonical_sorted_and_one_change_is_one_line(tmp_path):
    path = tmp_path / "searches/s/ledger.jsonl"
    ledger.upsert(path, row(1, "queued"))
    ledger.upsert(path, row(0, "running"))
    ledger.upsert(path, {"kind": "noise", "trial": 0, "status": "measured"})
    before = path.read_text().splitlines()
    assert [json.loads(line)["trial"] for line in before] == [0, 1, 0]  # candidates, then noise
    ledger.upsert(path, row(1, "rejected", 0.0123456789))
    after = path.read_text().splitlines()
    assert [a != b for a, b in zip(before, after)] == [False, True, False]
    assert json.loads(after[1])["selection"]["net_gain"] == 0.012346  # 6 decimals
    assert ledger.read_ledger(path)[1]["status"] == "rejected"


@pytest.mark.parametrize("text,key,words", [
    ('{"kind": "candidate", "trial": 0, "status": "won"}', "[0].status", "is not one of"),
    ('{"kind": "candidate", "trial": -1, "status": "queued"}', "[0].trial", "trial number"),
    ('{"kind": "candidate", "trial": 0, "trial": 1, "status": "queued"}', "trial", "appears twice"),
    ('{"kind": "candidate", "trial": 0, "status": "queued", "x": NaN}', None, "NaN"),
], ids=["status", "trial", "duplicate-key", "nan"])
def test_a_hand_edited_ledger_is_refused_naming_the_line(tmp_path, text, key, words):
    path = tmp_path / "ledger.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(StudbookError) as info:
        ledger.read_ledger(path)
    assert str(path) in info.value.file and info.value.key == key and words in str(info.value)


def test_the_search_figures_come_from_the_rows():
    rows = [row(0, "promoted", 0.05, **timing(1000.0, 100.0, 60.0), compute={"flops": 2e12}),
            row(1, "rejected", -0.01, **timing(1010.0, 120.0, 60.0), compute={"flops": 2e12}),
            row(2, "crashed", **timing(1100.0, 20.0, 0.0)),
            row(3, "invalid"),
            {"kind": "noise", "trial": 0, "status": "measured", **timing(900.0, 200.0, 150.0),
             "compute": {"flops": 4e12}}]
    figures = ledger.summary(rows)
    assert figures["finished"] == 3  # invalid never ran
    assert figures["candidates_per_hour"] == round(3 / (1130.0 - 900.0) * 3600, 2)
    assert figures["not_training_share"] == round((0.4 + 0.5) / 2, 3)  # median of 0.4 and 0.5
    assert figures["worker_seconds"] == 440.0 and figures["worker_seconds_per_promoted"] == 440.0
    assert figures["training_flops_per_promoted"] == 8e12
    assert figures["statuses"] == {"promoted": 1, "rejected": 1, "crashed": 1, "invalid": 1}


def test_candidates_and_negatives_list_every_kept_candidate(skeleton):
    path = Path("searches/niche-1/ledger.jsonl")
    ledger.write_ledger(path, [row(0, "promoted", 0.05), row(1, "timed-out", error="over its 300 s cap"),
                               row(2, "rejected", -0.02)])
    listed = json.loads(run([sys.executable, "-m", "studbook.cli", "candidates", "--json"], skeleton).stdout)
    assert [r["status"] for r in listed["niche-1"]["rows"]] == ["promoted", "timed-out", "rejected"]
    text = run([sys.executable, "-m", "studbook.cli", "negatives"], skeleton).stdout
    assert "s-001 (lora from founder, search niche-1, timed-out): no net gain measured vs founder " \
           "— over its 300 s cap" in text
    assert "s-002 (lora from founder, search niche-1, rejected): net gain -0.0200" in text
    assert "s-000" not in text
    missing = run([sys.executable, "-m", "studbook.cli", "candidates", "other"], skeleton, check=False)
    assert missing.returncode == 2 and "no search 'other' (known: niche-1)" in missing.stderr
