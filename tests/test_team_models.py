"""A team's own model: import a pico Qwen2 / Mistral / GPT-NeoX / Phi-3 with its own
subword tokenizer (BPE or Unigram, trained here with `tokenizers`), then breed a LoRA
adapter, a full fine-tune, a distilled student and a merge from it — each by `dvc repro`
in a real git + DVC repository, gated by lm-eval and carded. Nothing mocked.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import copy_skeleton, git_dvc_init, run
from pico import team_model

PY = sys.executable
CHILDREN = {  # name -> propose arguments (after the founder)
    "adapter": ["--method", "lora", "--parents", "founder", "--train", "pico", "--data", "stdlib_all"],
    "tuned": ["--method", "finetune", "--parents", "founder", "--train", "pico", "--data", "stdlib_all"],
    "student": ["--method", "distill", "--parents", "founder", "--train", "pico", "--data", "stdlib_all"],
    "merged": ["--method", "linear", "--parents", "founder,tuned", "--train", "none",
               "--data", "stdlib_all"],
}
# Every case breeds five generations by `dvc repro` (~3 min each on 2 cores): slow. The
# default run covers a subword import, LoRA and fine-tune through the README example and
# tests/test_launch.py.
pytestmark = pytest.mark.slow
CASES = [
    pytest.param(("qwen2", "bpe"), id="qwen2-bpe"),
    pytest.param(("mistral", "unigram"), id="mistral-unigram", marks=pytest.mark.slow),
    pytest.param(("gpt_neox", "bpe"), id="gpt_neox-bpe", marks=pytest.mark.slow),
    pytest.param(("phi3", "unigram"), id="phi3-unigram", marks=pytest.mark.slow),
]


def team_contract(repo: Path) -> None:
    """The pico test contract, accepting the team's architectures."""
    text = (repo / "conf/contract/stdlib_pico.yaml").read_text()
    text = text.replace("architectures: [llama, gpt2]", "architectures: [qwen2, mistral, gpt_neox, phi3]")
    (repo / "conf/contract/team_pico.yaml").write_text(text.replace("Tests only", "A team's pico models"))


@pytest.fixture(scope="module", params=CASES)
def team(request, tmp_path_factory) -> dict:
    arch, kind = request.param
    base = tmp_path_factory.mktemp(f"team-{arch}")
    source = team_model(base / "their-model", arch, kind)
    repo = copy_skeleton(base / "studbook")
    team_contract(repo)
    git_dvc_init(repo)
    logs = {}
    run([PY, "-m", "studbook.cli", "propose", "founder", "--from", str(source), "--contract", "team_pico"], repo)
    for name, args in CHILDREN.items():
        extra = ["--parameters", "{target_modules: all-linear}"] if arch == "phi3" and name == "adapter" else []
        run([PY, "-m", "studbook.cli", "propose", name, *args, *extra, "--contract", "team_pico"], repo)
    run([PY, "-m", "studbook.cli", "check"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a team's founder and four children"], repo)
    for name in ("founder", *CHILDREN):
        done = run([PY, "-m", "dvc", "repro", f"generations/{name}/dvc.yaml"], repo, timeout=1200)
        logs[name] = done.stdout + done.stderr
    return {"repo": repo, "arch": arch, "kind": kind, "source": source, "logs": logs}


def card(repo: Path, name: str) -> dict:
    return json.loads((repo / f"cards/{name}.json").read_text())


def meta(repo: Path, name: str) -> dict:
    folder = repo / ("adapters" if name == "adapter" else "models") / name
    return json.loads((folder / "studbook.json").read_text())


def test_every_operator_is_bred_gated_and_carded(team):
    repo = team["repo"]
    founder = meta(repo, "founder")
    for name in ("founder", *CHILDREN):
        c = card(repo, name)
        assert c["verdict"] in ("promoted", "rejected") and (repo / f"cards/{name}.md").is_file()
        m = meta(repo, name)
        assert m["architecture"] == team["arch"]
        # one tokenizer through the whole family: the team's own, never the byte one
        assert m["tokenizer_sha256"] == founder["tokenizer_sha256"]
    assert "steps: 4" in team["logs"]["adapter"] and "steps: 4" in team["logs"]["tuned"]


def test_children_inherit_the_parents_model_and_context(team):
    repo = team["repo"]
    for name in CHILDREN:
        recipe = meta(repo, name)["recipe"]["model"]
        assert recipe["architecture"] == team["arch"] and recipe["context_length"] == 128


def test_training_used_the_subword_tokenizer_and_reports_bits_per_byte(team):
    repo, logs = team["repo"], team["logs"]
    for name in ("adapter", "tuned", "student"):
        summary = dict(line.split(": ", 1) for line in logs[name].splitlines() if ": " in line)
        tokens = int(summary["tokens"])
        assert tokens == 4 * 4 * 128  # pico budget: 4 steps x 4 sequences x 128 tokens
        nats, bpb = float(summary["final_loss_nats"]), float(summary["final_bits_per_byte"])
        # subword tokens carry more than one byte each: bits per byte < nats per token / ln 2
        assert 0 < bpb < nats / math.log(2)
        assert meta(repo, name)["data"]["content_sha256"]
    assert meta(repo, "founder")["data"] is None  # an untrained import names no corpus
    assert "trained on" not in (repo / "cards/founder.md").read_text().lower()


def test_the_student_is_a_smaller_member_of_the_teachers_family(team):
    repo = team["repo"]
    student, teacher = (json.loads((repo / f"models/{n}/config.json").read_text()) for n in ("student", "founder"))
    assert student["model_type"] == teacher["model_type"]
    assert student["vocab_size"] == teacher["vocab_size"]
    assert student["num_hidden_layers"] == teacher["num_hidden_layers"] // 2
    assert meta(repo, "student")["total_parameters"] < meta(repo, "founder")["total_parameters"]


def test_lora_targets_come_from_peft_defaults_unless_named(team):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    config = json.loads((team["repo"] / "adapters/adapter/adapter_config.json").read_text())
    expected = DEFAULTS.get(team["arch"])
    if expected is None:  # PEFT has no default for this family: the recipe named all-linear
        targets = config["target_modules"]  # PEFT expands all-linear to each layer's modules
        assert {t.rsplit(".", 1)[-1] for t in targets} == {"down_proj", "gate_up_proj", "o_proj", "qkv_proj"}
        assert len(targets) == 2 * 4  # two layers, four projections each
    else:
        assert sorted(config["target_modules"]) == sorted(expected)


def test_one_items_bits_per_byte_equals_an_independent_computation(team):
    """lm-eval's rolling log-likelihood (prefix token, full windows, disjoint predictions),
    recomputed here with transformers alone, within 1e-4 bits per byte."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    repo = team["repo"]
    model = AutoModelForCausalLM.from_pretrained(repo / "models/tuned").eval()
    tokenizer = AutoTokenizer.from_pretrained(repo / "models/tuned")
    row = json.loads((repo / "generations/tuned/eval/samples/stdlib_bpb_general.jsonl").read_text().splitlines()[0])
    texts = {json.loads(line)["id"]: json.loads(line)["text"] for line in
             (repo / "data/benchmarks/heldout/bpb_general.jsonl").read_text().splitlines()}
    text = texts[row["id"]]
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    prefix, length = tokenizer.bos_token_id, 128
    nll, predicted = 0.0, 0
    with torch.no_grad():
        while predicted < len(tokens):
            end = min(predicted + length, len(tokens))
            context = ([prefix] + tokens)[max(0, end - length):end]  # inputs for targets ..end
            targets = tokens[max(0, end - length):end]
            logits = model(torch.tensor([context])).logits[0]
            losses = torch.nn.functional.cross_entropy(logits, torch.tensor(targets), reduction="none")
            nll += losses[-(end - predicted):].sum().item()
            predicted = end
    direct = nll / (len(text.encode()) * math.log(2))
    assert len(tokens) > length  # more than one window: the rolling part is exercised
    assert row["bits_per_byte"] == pytest.approx(direct, abs=1e-4)
