"""Breeding operators on pico models, through the real stage bodies (no DVC here).

Each test works in a scratch studbook (code, configs, tasks) with a small real corpus
written by the test, proposes generations with `studbook propose`'s function and runs
the breed and train stage bodies: real PEFT adapters, real merges, real distillation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from stagehelp import breed_initial, run_stage
from studbook.operators.artifacts import load_artifact, load_model, read_meta, weights_sha256, write_meta
from studbook.core.errors import StudbookError
from studbook.repository.proposal import propose

PICO = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}
TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(200))


@pytest.fixture
def studbook(skeleton: Path) -> Path:
    """The skeleton plus a small real corpus (train split) and its manifest."""
    corpus = Path("data/corpus")
    corpus.mkdir(parents=True)
    rows = [{"path": f"m{i}.py", "niche": "general" if i % 2 else "tests", "text": TEXT} for i in range(4)]
    (corpus / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (corpus / "manifest.json").write_text(json.dumps({
        "source": "test", "python_version": "3", "content_sha256": "0" * 64, "files": 4,
        "python_implementation": "CPython", "splits": {}}))
    return skeleton


def plant(name: str, method: str = "scratch", parents=(), parameters=None, seed: int = 0,
          **choices) -> Path:
    """Propose, breed and train a generation; returns its artifact folder."""
    resolved = propose(name, method, list(parents), seed, {**PICO, **choices},
                       parameters=parameters)
    run_stage("breed", name)
    return Path("models" if resolved.kind == "model" else "adapters") / name


def nudge_adapter(folder: Path, seed: int) -> None:
    """Give a freshly initialised adapter a non-zero update (its B matrices start at 0)."""
    file = folder / "adapter_model.safetensors"
    tensors = load_file(str(file))
    generator = torch.Generator().manual_seed(seed)
    for key, value in tensors.items():
        if "lora_B" in key:
            tensors[key] = 0.05 * torch.randn(value.shape, generator=generator)
    save_file(tensors, str(file), metadata={"format": "pt"})
    meta = read_meta(folder)
    meta["weights_sha256"] = weights_sha256(folder)
    write_meta(folder, meta)


def logits(model, ids=None):
    ids = ids if ids is not None else torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("arch", ["llama_pico", "gpt2_pico"])
def test_lora_adapter_round_trips_through_peft(studbook, arch):
    from peft import PeftModel

    base = plant("base", model=arch)
    adapter = plant("ad", "lora", ["base"], {"rank": 4, "alpha": 8}, model=arch)
    assert {p.name for p in adapter.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                   "studbook.json"}
    meta = read_meta(adapter)
    assert meta["kind"] == "adapter" and meta["base"]["sha256"] == weights_sha256(base)
    assert meta["compute"]["steps"] == 4 and 0 < meta["parameters"] < meta["total_parameters"]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    # PEFT's own loader, on the base, gives the same function as studbook's merged artifact
    peft_model = PeftModel.from_pretrained(load_model(base), str(adapter))
    merged = load_artifact(adapter)
    torch.testing.assert_close(logits(peft_model), logits(merged), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(logits(merged), logits(load_model(base)))  # training changed it
    # the base is pinned by sha256: a different base is refused
    tensors = load_file(str(base / "model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(StudbookError) as info:
        load_artifact(adapter)
    assert info.value.key == "base.sha256"


def test_adapter_merge_cat_is_the_weighted_sum_of_updates(studbook):
    base = plant("base")
    for name, seed in (("a1", 1), ("a2", 2)):
        nudge_adapter(plant(name, "lora", ["base"], {"rank": 4}, seed=seed, train="none"), seed)
    mixed = plant("mix", "adapter_merge", ["a1", "a2"],
                  {"combination_type": "cat", "weights": [0.7, 0.3], "merge_into_base": True},
                  train="none")
    assert read_meta(mixed)["kind"] == "model"
    base_w, mix_w = load_file(str(base / "model.safetensors")), load_file(str(mixed / "model.safetensors"))
    deltas = [{k: v - base_w[k] for k, v in load_artifact(Path("adapters", n)).state_dict().items()
               if k in base_w} for n in ("a1", "a2")]
    changed = 0
    for key in base_w:
        expected = base_w[key] + 0.7 * deltas[0][key] + 0.3 * deltas[1][key]
        torch.testing.assert_close(mix_w[key], expected, rtol=1e-5, atol=1e-6)
        changed += int(not torch.equal(mix_w[key], base_w[key]))
    assert changed == 4  # every LoRA-targeted projection moved: PEFT's Llama default, q and v, 2 layers
    # kept as an adapter instead: PEFT loads it on the same base
    adapter = plant("mix2", "adapter_merge", ["a1", "a2"], {"combination_type": "cat"}, train="none")
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8  # cat: 4 + 4


@pytest.mark.parametrize("arch", ["llama_pico", "gpt2_pico"])
def test_full_weight_merge_generation_of_adapter_parents(studbook, arch):
    base = plant("base", model=arch)
    for name, seed in (("a1", 1), ("a2", 2)):
        nudge_adapter(plant(name, "lora", ["base"], {"rank": 4}, seed=seed, model=arch, train="none"), seed)
    merged = plant("spec", "task_arithmetic", ["base", "a1", "a2"],
                   {"base_model": "base", "models": [{"model": "a1", "parameters": {"weight": 0.5}},
                                                     {"model": "a2", "parameters": {"weight": 0.5}}]},
                   model=arch, train="none")
    bred = read_meta(merged)
    assert bred["breed"]["facts"]["merge_method"] == "task_arithmetic"
    assert [p["name"] for p in bred["parents"]] == ["base", "a1", "a2"]
    base_w = load_model(base).state_dict()
    a1, a2 = load_artifact(Path("adapters/a1")).state_dict(), load_artifact(Path("adapters/a2")).state_dict()
    out = load_model(merged).state_dict()
    for key, value in load_file(str(merged / "model.safetensors")).items():
        torch.testing.assert_close(value, base_w[key] + 0.5 * (a1[key] - base_w[key]) + 0.5 * (a2[key] - base_w[key]),
                                   rtol=1e-5, atol=1e-6)
    assert read_meta(merged)["weights_sha256"] == weights_sha256(merged)
    assert set(out) >= set(load_file(str(merged / "model.safetensors")))


# golden: (cross-entropy, distillation loss) in nats/token of 2 steps, seed 0, this torch build
DISTILL_GOLDEN = {"llama_pico": (5.3134, 2.5889), "gpt2_pico": (5.2805, 2.5711)}


@pytest.mark.parametrize("arch", sorted(DISTILL_GOLDEN))
def test_two_step_distillation_golden_loss(arch):
    from studbook.operators.artifacts import build_model
    from studbook.operators.methods.distill import DistillParameters
    from studbook.repository.recipes import ModelSpec, TrainSpec
    from test_training import byte_stream
    from studbook.operators.training import distillation_loss, train

    from conftest import ROOT

    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / f"conf/model/{arch}.yaml").read_text()))
    small = spec.model_copy(update={"config": {**spec.config, **(
        {"num_hidden_layers": 1, "hidden_size": 16, "intermediate_size": 32} if arch == "llama_pico"
        else {"n_layer": 1, "n_embd": 16})}})
    teacher, student = build_model(spec, seed=0), build_model(small, seed=1)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    stream = byte_stream(TEXT)
    params = DistillParameters(temperature=2.0, kl_weight=0.5)
    teacher.train()  # training must switch the teacher to eval mode itself (no dropout in targets)
    result = train(student, stream, TrainSpec(steps=2, batch_size=2, lr=1e-2, log_every=1),
                   spec.context_length, seed=0, teacher=teacher, distill=params)
    batch = torch.from_numpy(stream.ids[:129].astype(np.int64)).unsqueeze(0)
    total, ce = distillation_loss(logits(student, batch[:, :-1]), logits(teacher, batch[:, :-1]),
                                  batch[:, 1:], 2.0, 0.5)
    golden_ce, golden_total = DISTILL_GOLDEN[arch]
    assert result.final_loss == pytest.approx(golden_ce, abs=2e-3)
    assert total.item() == pytest.approx(golden_total, abs=2e-3)
    # the soft-target term is T^2 KL >= 0, zero only when student == teacher
    assert distillation_loss(logits(teacher, batch[:, :-1]), logits(teacher, batch[:, :-1]),
                             batch[:, 1:], 2.0, 1.0)[0].item() == pytest.approx(0.0, abs=1e-5)


def test_distill_generation_records_its_teacher(studbook):
    plant("teacher")
    Path("conf/model/llama_nano.yaml").write_text(
        Path("conf/model/llama_pico.yaml").read_text().replace("num_hidden_layers: 2", "num_hidden_layers: 1"))
    student = plant("student", "distill", ["teacher"], {"temperature": 2.0, "kl_weight": 0.7},
                    model="llama_nano")
    meta = read_meta(student)
    assert meta["teacher"]["name"] == "teacher" and meta["relation"] == "distillation"
    assert meta["teacher"]["sha256"] == weights_sha256("models/teacher")
    assert meta["parameters"] < meta["teacher"]["parameters"]
    assert meta["tokenizer_sha256"] == read_meta("models/teacher")["tokenizer_sha256"]
    # FLOPs count the teacher's forward pass too
    assert meta["compute"]["flops"] > 6.0 * meta["parameters"] * meta["compute"]["tokens"]


def test_import_founder_pins_sha256_and_refuses_pickles(studbook, tmp_path):
    source = plant("origin")
    outside = tmp_path / "team-model"
    outside.mkdir()
    for file in source.iterdir():
        if file.name != "studbook.json":
            (outside / file.name).write_bytes(file.read_bytes())
    from studbook.repository.proposal import propose_import

    params = propose_import("imported", str(outside), dict(PICO), seed=0)
    assert params["sha256"] == weights_sha256(outside)
    # pinned by content, not by path: the source folder is no DVC dependency, and a clone
    # without it (and without the artifact in a cache) stops before compute, naming it
    assert str(outside) not in Path("generations/imported/dvc.yaml").read_text()
    moved = outside.with_name("elsewhere")
    outside.rename(moved)
    with pytest.raises(StudbookError) as missing:
        run_stage("breed", "imported")
    assert missing.value.key == "parameters.source" and "is not on this machine" in str(missing.value)
    assert not Path("models/imported").exists()
    moved.rename(outside)
    run_stage("breed", "imported")
    assert weights_sha256("models/imported") == params["sha256"]  # imported byte for byte
    recipe = yaml.safe_load(Path("generations/imported/recipe.yaml").read_text())
    assert recipe["method"] == "import" and recipe["model"]["architecture"] == "llama"
    (outside / "extra.bin").write_bytes(b"not opened")
    with pytest.raises(StudbookError, match="pickle-based weights are refused"):
        propose_import("imported2", str(outside), dict(PICO), seed=0)
    assert not Path("generations/imported2").exists()
    (outside / "extra.bin").unlink()
    tensors = load_file(str(outside / "model.safetensors"))
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] * 2
    save_file(tensors, str(outside / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(StudbookError) as info:
        run_stage("breed", "imported")
    assert info.value.key == "parameters.sha256" and "changed" in str(info.value)


# ---- the compatibility contract: every mismatch fails before any weight is written ----

def _wide_llama() -> str:
    Path("conf/model/llama_wide.yaml").write_text(
        Path("conf/model/llama_pico.yaml").read_text().replace("intermediate_size: 64", "intermediate_size: 96"))
    return "llama_wide"


def _corrupt_tokenizer(name: str) -> None:
    folder = Path("models") / name
    meta = read_meta(folder)
    meta["tokenizer_sha256"] = "f" * 64
    write_meta(folder, meta)


def _llama_only_contract() -> None:
    text = Path("conf/contract/stdlib_pico.yaml").read_text()
    Path("conf/contract/llama_only.yaml").write_text(text.replace("architectures: [llama, gpt2]",
                                                                  "architectures: [llama]"))


def case_architecture():
    plant("p1"), plant("p2", model="gpt2_pico")
    return "m", "linear", ["p1", "p2"], {}, {}, ["'p1' and 'p2' differ in model_type: llama vs gpt2"]


def case_shapes():
    plant("p1"), plant("p2", model=_wide_llama())
    return "m", "linear", ["p1", "p2"], {}, {}, ["'p1' and 'p2' differ in the shape of",
                                                 "mlp.down_proj.weight': [32, 64] vs [32, 96]"]


def case_tokenizer():
    plant("p1"), plant("p2", seed=1)
    _corrupt_tokenizer("p2")
    return "m", "ties", ["p1", "p2"], {"base_model": "p1"}, {}, ["'p1' and 'p2' differ in tokenizer"]


def case_adapter_base():
    plant("b1"), plant("b2", seed=1)
    plant("a1", "lora", ["b1"], {"rank": 4}, train="none")
    plant("a2", "lora", ["b2"], {"rank": 4}, train="none")
    return "m", "adapter_merge", ["a1", "a2"], {}, {}, ["adapters 'a1' and 'a2' differ in base: 'b1'"]


def case_lora_rank():
    plant("b1")
    plant("a1", "lora", ["b1"], {"rank": 4}, train="none")
    plant("a2", "lora", ["b1"], {"rank": 8}, train="none")
    return "m", "adapter_merge", ["a1", "a2"], {"combination_type": "linear"}, {}, [
        "adapters 'a1' and 'a2' differ in LoRA rank r: 4 vs 8"]


def case_budget():
    plant("t1")
    Path("conf/model/llama_3m_short.yaml").write_text(  # the founder's sizes, the teacher's context
        Path("conf/model/llama_3m.yaml").read_text().replace("context_length: 512", "context_length: 128"))
    return "m", "distill", ["t1"], {}, {"model": "llama_3m_short"}, [
        "the child would have 3,230,720 parameters; the contract allows 1,000,000"]


def case_contract_architecture():
    plant("g1", model="gpt2_pico")  # bred under stdlib_pico; the contract then narrows
    contract = Path("conf/contract/stdlib_pico.yaml")
    contract.write_text(contract.read_text().replace("architectures: [llama, gpt2]", "architectures: [llama]"))
    return "m", "lora", ["g1"], {}, {"model": "gpt2_pico"}, [
        "parent 'g1' is a gpt2; the contract accepts llama"]



CASES = [case_architecture, case_shapes, case_tokenizer, case_adapter_base, case_lora_rank,
         case_budget, case_contract_architecture]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_contract_mismatch_fails_before_any_weight_is_written(studbook, case):
    name, method, parents, parameters, choices, words = case()
    resolved = propose(name, method, parents, 0, {**PICO, **choices}, parameters=parameters)
    before = sorted(str(p) for p in Path(".").rglob("*") if p.is_file())
    with pytest.raises(StudbookError) as info:
        run_stage("breed", name)
    message = str(info.value)
    for fragment in words:
        assert fragment in message
    assert info.value.file == resolved.recipe_file and info.value.key
    after = sorted(str(p) for p in Path(".").rglob("*") if p.is_file())
    assert after == before  # nothing written: no bred folder, no temporary, no artifact
    assert not list(Path(f"generations/{name}").glob(".bred.tmp-*"))  # no scratch left behind


def test_a_child_whose_contract_gates_on_tasks_its_parent_was_never_scored_on_is_refused(studbook):
    plant("g1")
    text = Path("conf/contract/stdlib_pico.yaml").read_text()
    Path("conf/contract/other.yaml").write_text(text.replace(
        "  - {task: stdlib_bpb_tests, metric: bits_per_byte, niche: tests}\n",
        "  - {task: stdlib_bpb_tests, metric: bits_per_byte, niche: tests}\n"
        "  - {task: stdlib_bpb_concurrency, metric: bits_per_byte, niche: concurrency}\n").replace(
        "tasks: [stdlib_bpb_general, stdlib_bpb_tests]", "tasks: [stdlib_bpb_general, stdlib_bpb_concurrency]"))
    before = {str(p): p.read_bytes() for p in Path(".").rglob("*") if p.is_file()}
    with pytest.raises(StudbookError) as info:
        propose("m", "lora", ["g1"], 0, {**PICO, "contract": "other"})
    assert "parent 'g1' was bred under contract 'stdlib_pico', which does not evaluate " \
        "'stdlib_bpb_concurrency'" in str(info.value)
    assert (info.value.file, info.value.key) == ("conf/contract/other.yaml", "primary.tasks[1]")
    assert {str(p): p.read_bytes() for p in Path(".").rglob("*") if p.is_file()} == before


def test_parents_auto_ranks_promoted_compatible_members(studbook):
    """The ranking rule, on hand-written cards taken as verified (verification against
    the evidence is tested in test_hostile_verification, on a bred member)."""
    from studbook.repository.population import select_parents
    from studbook.repository.verification import Verification

    def verified(card):
        return Verification(card["name"], "verified")

    cards = Path("cards")

    def card(name, verdict, score, kind="model", arch="llama"):
        (cards / f"{name}.json").write_text(json.dumps({
            "name": name, "verdict": verdict, "kind": kind, "architecture": arch,
            "parameters": 30000, "benchmarks": [
                {"task": "stdlib_bpb_general", "value": score}, {"task": "stdlib_bpb_tests", "value": score + 0.2}]}))
    card("old", "promoted", 6.0)
    card("best", "promoted", 5.0)
    card("worse-but-rejected", "rejected", 4.0)
    card("ad", "promoted", 4.5, kind="adapter")
    card("alien", "promoted", 3.0, arch="mamba")
    chosen, selection = select_parents("ties", "stdlib_pico", verify=verified)
    assert chosen == ["ad", "best"]  # ties takes a base + one model; adapters allowed
    reasons = {c["name"]: c["excluded"] for c in selection["candidates"]}
    assert reasons["worse-but-rejected"] == "verdict rejected"
    assert reasons["alien"] == "architecture mamba not accepted"
    chosen, selection = select_parents("lora", "stdlib_pico", verify=verified)
    assert chosen == ["best"] and "takes model" in {c["name"]: c["excluded"] for c in
                                                   selection["candidates"]}["ad"]
    assert "ranked by mean bits_per_byte" in selection["rule"]


@pytest.mark.parametrize("combination,extra,rank", [
    ("linear", {}, 4), ("svd", {"svd_rank": 4}, 4), ("ties", {"density": 0.5}, 4),
    ("dare_ties", {"density": 0.5}, 4), ("cat", {}, 8)])
def test_every_peft_combination_gives_a_loadable_adapter(studbook, combination, extra, rank):
    from peft import PeftModel

    base = plant("base")
    for name, seed in (("a1", 1), ("a2", 2)):
        nudge_adapter(plant(name, "lora", ["base"], {"rank": 4}, seed=seed, train="none"), seed)
    adapter = plant("mix", "adapter_merge", ["a1", "a2"],
                    {"combination_type": combination, "weights": [0.5, 0.5], **extra}, train="none")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == rank and read_meta(adapter)["base"]["name"] == "base"
    merged = PeftModel.from_pretrained(load_model(base), str(adapter)).merge_and_unload()
    assert not torch.allclose(logits(merged), logits(load_model(base)))  # the update survived
    torch.testing.assert_close(logits(merged), logits(load_artifact(adapter)))


def test_adapter_files_are_byte_identical_across_processes(studbook):
    """PEFT stores target_modules from a set; two processes must still write the same bytes."""
    import subprocess
    import sys

    plant("base")
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from studbook.repository.proposal import propose\n"
            "from stagehelp import breed_initial\n"
            "propose(sys.argv[1], 'lora', ['base'], 0, {'contract': 'stdlib_pico', 'model': 'llama_pico', "
            "'train': 'none', 'data': 'stdlib_all'}, parameters={'rank': 2})\n"
            "breed_initial(sys.argv[1])\n")
    for name, seed in (("x1", "1"), ("x2", "2")):
        subprocess.run([sys.executable, "-c", code, name], check=True, capture_output=True,
                       env={**__import__("os").environ, "PYTHONHASHSEED": seed})
    first = (Path("generations/x1/initial/adapter_config.json")).read_bytes()
    assert first == Path("generations/x2/initial/adapter_config.json").read_bytes()
    assert json.loads(first)["target_modules"] == sorted(json.loads(first)["target_modules"])


def test_finetune_starts_from_the_parent_byte_for_byte_and_trains_every_weight(studbook):
    from studbook.core.atomic import sha256_file

    parent = plant("base")
    propose("ft", "finetune", ["base"], 0, PICO)
    facts, initial = breed_initial("ft")
    assert sha256_file(initial / "model.safetensors") == sha256_file(parent / "model.safetensors")
    run_stage("breed", "ft")
    before, after = load_file(str(parent / "model.safetensors")), load_file("models/ft/model.safetensors")
    assert sorted(before) == sorted(after)
    assert all(not torch.equal(before[name], after[name]) for name in before)  # every weight moved
    meta = read_meta("models/ft")
    assert meta["relation"] == "finetune" and meta["parents"][0]["name"] == "base"
    assert facts["method"] == "finetune"
