"""The README's walk-through of a team's own model, corpus and benchmarks, run as written.

Every `<!-- file: PATH -->` block is written to PATH, the `<!-- under: params.yaml corpora -->`
block goes under `corpora:` in params.yaml, and the `<!-- run -->` commands run in order —
in a real git + DVC repository, with a pico Qwen2 (BPE tokenizer trained here) at
`../our-model` and a handbook of Markdown files (module docstrings of the standard library).
"""

from __future__ import annotations

import ast
import json
import re
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, copy_skeleton, git_dvc_init, run
from pico import team_model

# a whole team walk-through, import to card (~55 s): in the slow half, so the default run keeps
# under 10 minutes
pytestmark = pytest.mark.slow

BLOCK = re.compile(r"<!-- (file|under|run):? ?([^>]*?) -->\n```[a-z]*\n(.*?)```", re.S)


def example() -> list[tuple[str, str, str]]:
    text = (ROOT / "README.md").read_text()
    start, end = text.index("<!-- example:team begin -->"), text.index("<!-- example:team end -->")
    return [(kind, target.strip(), body) for kind, target, body in BLOCK.findall(text[start:end])]


def write_handbook(folder: Path, pages: int = 100) -> None:
    """Markdown pages: the docstrings of standard-library modules, one page per module."""
    root = Path(sysconfig.get_paths()["stdlib"])
    written = 0
    for path in sorted(root.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8", errors="replace")))
        if doc and len(doc) > 200:
            page = folder / ("guides" if written % 3 else "reference") / f"{path.stem}.md"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(f"# {path.stem}\n\n{doc}\n", encoding="utf-8")
            written += 1
        if written == pages:
            break


@pytest.fixture(scope="module")
def walked(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("readme")
    team_model(base / "our-model", "qwen2", "bpe")
    repo = copy_skeleton(base / "studbook")
    write_handbook(repo / "handbook")
    git_dvc_init(repo)
    outputs = []
    for kind, target, body in example():
        if kind == "file":
            (repo / target).parent.mkdir(parents=True, exist_ok=True)
            (repo / target).write_text(body)
        elif kind == "under":
            file, key = target.split()
            text = (repo / file).read_text()
            (repo / file).write_text(text.replace(f"{key}:", f"{key}:\n{body.rstrip()}", 1))
        else:
            for command in body.replace("\\\n", " ").strip().splitlines():
                outputs.append(run(["bash", "-c", command], repo, timeout=1500).stdout)
    return {"repo": repo, "blocks": example(), "log": "\n".join(outputs)}


def test_the_example_has_every_part(walked):
    kinds = [(kind, target) for kind, target, _ in walked["blocks"]]
    assert ("under", "params.yaml corpora") in kinds
    assert ("file", "conf/contract/handbook.yaml") in kinds and ("run", "") in kinds
    assert "output_type: generate_until" in dict(((k, t), b) for k, t, b in walked["blocks"])[
        ("file", "benchmarks/handbook_qa.yaml")]


def test_the_founder_is_the_imported_model_and_the_child_a_lora_adapter(walked):
    repo = walked["repo"]
    founder = json.loads((repo / "cards/founder.json").read_text())
    child = json.loads((repo / "cards/handbook-lora.json").read_text())
    assert founder["method"] == "import" and founder["architecture"] == "qwen2"
    assert founder["data"] is None  # an untrained import names no corpus
    assert child["kind"] == "adapter" and child["parents"][0]["name"] == "founder"
    assert child["data"]["folder"] == "data/corpora/handbook" and child["data"]["documents"] > 20
    assert (repo / "adapters/handbook-lora/adapter_config.json").is_file()


def test_the_teams_benchmarks_scored_both_members(walked):
    repo = walked["repo"]
    for name in ("founder", "handbook-lora"):
        card = json.loads((repo / f"cards/{name}.json").read_text())
        values = {b["task"]: (b["metric"], b["value"]) for b in card["benchmarks"]}
        assert values["handbook_qa"][0] == "exact_match" and 0.0 <= values["handbook_qa"][1] <= 1.0
        assert values["handbook_bpb"][0] == "bits_per_byte" and 0.5 < values["handbook_bpb"][1] < 8.0
        assert card["verdict"] in ("promoted", "rejected")
    founder = json.loads((repo / "cards/founder.json").read_text())
    child = json.loads((repo / "cards/handbook-lora.json").read_text())
    bpb = {c["name"]: next(b["value"] for b in c["benchmarks"] if b["task"] == "handbook_bpb")
           for c in (founder, child)}
    assert bpb["handbook-lora"] < bpb["founder"]  # 30 steps on the handbook: it learned it
    assert "handbook-lora" in walked["log"]  # `studbook population` lists it


def test_the_corpus_and_the_team_data_are_dependencies(walked):
    repo = walked["repo"]
    root = (repo / "dvc.yaml").read_text()
    assert "prepare_data_handbook" in root and "- handbook" in root
    evaluate = (repo / "generations/handbook-lora/dvc.yaml").read_text()
    assert "benchmarks/qa.jsonl" in evaluate and "benchmarks/handbook_qa.yaml" in evaluate
    status = run(["git", "status", "--porcelain"], repo).stdout
    assert "dvc.lock" in status  # bred: the locks record every input's hash
