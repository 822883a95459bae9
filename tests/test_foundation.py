"""The foundation on a real pico population (git + DVC): derived code dependencies seen by
`dvc status`, the numeric pin recorded on cards, and drift after a re-breed that gives
other weights — lineage and card diff still work and the drift report names the numbers.

Population: `pico` (scratch, trained), `pico-lora` (LoRA on pico), `pico-ties` (TIES of
pico and pico-lora) and `pico-lin` (linear merge of the same): two merge methods, so an
edit of one can be told from the other.
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import copy_skeleton, git_dvc_init, run

# a pico population bred with dvc repro, re-bred and drifted: about 200 s, beyond the default budget
pytestmark = pytest.mark.slow

PY = sys.executable
PICO = ["--model", "llama_pico", "--contract", "stdlib_pico"]
STAGES = ("breed", "evaluate", "record")


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    repo = copy_skeleton(tmp_path_factory.mktemp("foundation") / "studbook")
    git_dvc_init(repo)
    cli = [PY, "-m", "studbook.cli", "propose"]
    run(cli + ["pico", "--train", "pico", *PICO], repo)
    run(cli + ["pico-lora", "--method", "lora", "--parents", "pico", "--train", "pico",
               "--parameters", "{rank: 2}", *PICO], repo)
    merge = "{base_model: pico, parameters: {density: 0.5}}"
    run(cli + ["pico-ties", "--method", "ties", "--parents", "pico,pico-lora", "--train", "none",
               "--parameters", merge, *PICO], repo)
    # a team's own benchmark: a task file and its data, committed beside the shipped tasks,
    # in a contract only pico-lin is bred for
    (repo / "tasks/team").mkdir()
    (repo / "tasks/team/team_bpb.yaml").write_text(
        "include: ../_stdlib_bpb_template_yaml\ntask: team_bpb\n"
        "dataset_kwargs:\n  data_files:\n    test: tasks/team/team_bpb.jsonl\n")
    (repo / "tasks/team/team_bpb.jsonl").write_text("".join(
        json.dumps({"id": f"t{i}", "niche": "team", "text": f"def team_{i}(x):\n    return x + {i}\n"}) + "\n"
        for i in range(6)))
    contract = (repo / "conf/contract/stdlib_pico.yaml").read_text().replace(
        "benchmarks:\n", "benchmarks:\n  - {task: team_bpb, metric: bits_per_byte, niche: team}\n")
    (repo / "conf/contract/team_pico.yaml").write_text(contract)
    run(cli + ["pico-lin", "--method", "linear", "--parents", "pico,pico-lora", "--train", "none",
               "--model", "llama_pico", "--contract", "team_pico"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "propose the pico population"], repo)
    run([PY, "-m", "dvc", "repro", "-P"], repo, timeout=900)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pico population bred"], repo)
    return repo


def marked(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed, as 'generation:stage' (or the shared stage)."""
    status = json.loads(run([PY, "-m", "dvc", "status", "--json"], repo).stdout)
    found = set()
    for stage in status:
        match = re.match(r"^(?:generations/([\w-]+)/dvc\.yaml:)?(\w+)$", stage)
        assert match, stage
        found.add(f"{match.group(1)}:{match.group(2)}" if match.group(1) else match.group(2))
    return found


@contextmanager
def edited(repo: Path, path: str, text: str = "\n# touched by a test\n"):
    """Append to a file for the duration of the block, then restore it byte for byte."""
    file = repo / path
    original = file.read_bytes()
    file.write_bytes(original + text.encode())
    try:
        yield
    finally:
        file.write_bytes(original)


GENERATIONS = ("pico", "pico-lora", "pico-ties", "pico-lin")


def test_the_population_is_up_to_date(population):
    assert marked(population) == set()


@pytest.mark.parametrize("kind", ["breed", "evaluate", "record", "prepare_data", "build_benchmarks"])
def test_editing_a_stage_module_marks_exactly_that_stage_kind(population, kind):
    with edited(population, f"src/studbook/stages/{kind}.py"):
        shared = {"prepare_data": {"prepare_data_stdlib"}, "build_benchmarks": {"build_benchmarks"}}
        expected = shared.get(kind, {f"{g}:{kind}" for g in GENERATIONS})
        assert marked(population) == expected
    assert marked(population) == set()


def test_editing_one_merge_method_marks_only_the_generations_that_use_it(population):
    with edited(population, "src/studbook/operators/merges/ties.py"):
        assert marked(population) == {f"pico-ties:{s}" for s in STAGES}
    with edited(population, "src/studbook/operators/merges/linear.py"):
        assert marked(population) == {f"pico-lin:{s}" for s in STAGES}
    with edited(population, "src/studbook/operators/merges/slerp.py"):  # used by nobody
        assert marked(population) == set()


def test_editing_one_tasks_data_marks_only_the_evaluations_of_that_task(population):
    item = '{"id": "x", "niche": "team", "text": "y = 1"}\n'
    # the team's own benchmark: only the generation whose contract has it re-evaluates
    with edited(population, "tasks/team/team_bpb.jsonl", item):
        assert marked(population) == {"pico-lin:evaluate"}
    with edited(population, "tasks/team/team_bpb.yaml"):
        assert marked(population) == {"pico-lin:evaluate"}
    # a built held-out benchmark (an output of build_benchmarks, which DVC marks as edited)
    with edited(population, "data/benchmarks/heldout/bpb_general.jsonl", item):
        assert marked(population) == {"build_benchmarks"} | {f"{g}:evaluate" for g in GENERATIONS}
    # a benchmark no contract here uses: its task file and its data mark no generation
    with edited(population, "data/benchmarks/heldout/bpb_concurrency.jsonl", item):
        assert marked(population) == {"build_benchmarks"}
    with edited(population, "tasks/stdlib_bpb_concurrency.yaml"):
        assert marked(population) == set()
    # a mining task: scored by evaluate, its items read by record (hard examples)
    with edited(population, "data/benchmarks/mining/bpb_tests.jsonl", item):
        assert marked(population) == {"build_benchmarks"} | {
            f"{g}:{s}" for g in GENERATIONS for s in ("evaluate", "record")}


def test_cards_record_the_pinned_numeric_environment(population):
    card = json.loads((population / "cards/pico.json").read_text())
    numerics = card["numerics"]
    assert numerics["mode"] == "pinned" and numerics["reproducible"] is True
    assert numerics["cpu_capability"] == "avx2" and numerics["mkl_cbwr"] == "COMPATIBLE,STRICT"
    assert numerics["threads"] == 2 and numerics["device"] == "cpu"
    text = (population / "cards/pico.md").read_text()
    assert "- numerics: pinned — ATen kernels `avx2`, MKL_CBWR `COMPATIBLE,STRICT`" in text
    assert re.search(r"^\| wall time \| \d+ s on .+ \|$", text, re.M)  # host and time: one line


def test_re_breeding_with_the_pinned_numerics_changes_no_tracked_file(population):
    """A re-breed gives the same weights, the same evidence, the same card and the same
    locks: wall time and host stay with the breeding that first produced these weights."""
    repo = population
    log = run([PY, "-m", "dvc", "repro", "-f", "generations/pico-lora/dvc.yaml"], repo, timeout=900).stdout
    assert log.count("Running stage 'generations/pico-lora/") == 3
    assert "wall_time: kept (same weights as when first recorded)" in log
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert marked(repo) == set()


def test_a_member_rebred_with_other_weights_is_reported_and_nothing_crashes(population):
    """Re-breed the founder without the pin (other floats): lineage, card diff, drift."""
    import os

    repo = population
    committed = json.loads((repo / "cards/pico.json").read_text())
    env_fast = {**os.environ, "STUDBOOK_NUMERICS": "fast", "STUDBOOK_THREADS": "1",
                "PATH": str(Path(PY).parent) + os.pathsep + os.environ.get("PATH", "")}
    import subprocess

    for stage in STAGES:
        done = subprocess.run([PY, "-m", "dvc", "repro", "-f", "-s", f"generations/pico/dvc.yaml:{stage}"],
                              cwd=repo, env=env_fast, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rebred = json.loads((repo / "models/pico/studbook.json").read_text())
    assert rebred["weights_sha256"] != committed["weights_sha256"]
    assert rebred["numerics"]["mode"] == "fast"

    drift = run([PY, "-m", "studbook.cli", "drift"], repo)
    assert "pico: drifted" in drift.stdout and "weights_sha256: card " in drift.stdout
    # scores are reported with card and re-bred value and delta, or as equal at the card's precision
    moved = re.findall(r"(stdlib_\w+) (bits_per_byte|acc): card \d\.\d{6}, re-bred \d\.\d{6} \([+-]\d\.\d{6}\)",
                       drift.stdout)
    assert moved or "scores: equal to the card's at its precision (6 decimals)" in drift.stdout
    assert "numerics on the card: pinned: ATen avx2, MKL_CBWR COMPATIBLE,STRICT" in drift.stdout
    assert "numerics re-bred:     fast (not bit-reproducible across machines)" in drift.stdout
    assert "pico-lora: same" in drift.stdout and "drifted: 1 (pico)" in drift.stderr
    as_json = json.loads(run([PY, "-m", "studbook.cli", "drift", "pico", "--json"], repo).stdout)
    assert [r["member"] for r in as_json] == ["pico"] and as_json[0]["status"] == "drifted"

    lineage = run([PY, "-m", "studbook.cli", "lineage"], repo).stdout
    assert lineage.splitlines()[0].startswith("pico [model, scratch, promoted]")
    assert "└─ pico-lora" in lineage  # the child still descends from its (committed) parent

    run(["git", "checkout", "-qb", "rebred"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pico re-bred without the pin"], repo)
    diff = run([PY, "-m", "studbook.cli", "card", "diff", "main", "rebred"], repo, check=False)
    assert diff.returncode in (0, 1), diff.stderr
    assert "## changed: `pico`" in diff.stdout
    lineage = run([PY, "-m", "studbook.cli", "lineage", "--format", "json"], repo).stdout
    edges = {(e["parent"], e["child"]) for e in json.loads(lineage)["edges"]}
    assert ("pico", "pico-lora") in edges  # the committed child names the old weights: drifted edge kept
    run(["git", "checkout", "-q", "main"], repo)
    run([PY, "-m", "dvc", "checkout", "-q"], repo, check=False)
