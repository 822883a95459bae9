"""LoRA extraction (`extract_lora`): a full child and its parent as a PEFT adapter on the parent.

Against mergekit-extract-lora 0.1.5 run in this process (same MKL, same threads: the
SVDs are bit-identical) on llama_pico and a Mistral pico with its own tokenizer: the
adapter's tensors are mergekit's, bit for bit, and its config is mergekit's up to the
order of `target_modules`. A really fine-tuned child comes back through PEFT's
`merge_and_unload` at full rank, and a low rank is smaller and measurably worse. The
breeding method is called as the breed stage calls it (check, then breed; the whole stage
under `-m slow`), and bad parameters name their recipe and key.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT
from safetensors.torch import load_file, save_file

from studbook.core.errors import StudbookError
from studbook.operators.artifacts import build_model, save_model
from studbook.operators.extract import extract_lora
from studbook.operators.tokenizer import build_tokenizer
from studbook.repository.recipes import ModelSpec

TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(200))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """MKL's threaded SVD of a pico-sized matrix takes ~25 ms on two busy cores against
    0.15 ms on one; mergekit and studbook run with the same count, so bit-identity holds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def llama_pico(folder: Path, seed: int = 0) -> Path:
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/llama_pico.yaml").read_text()))
    save_model(build_model(spec, seed=seed), build_tokenizer(spec.context_length), folder)
    return folder


def nudged(parent: Path, child: Path, seed: int, skip=lambda name: False) -> Path:
    """A copy of `parent` whose every tensor moved by a random full-rank delta."""
    shutil.copytree(parent, child)
    file = child / "model.safetensors"
    tensors = load_file(str(file))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if not skip(name):
            tensors[name] = tensor + 0.02 * torch.randn(tensor.shape, generator=generator)
    save_file(tensors, str(file), metadata={"format": "pt"})
    return child


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """arch -> (child, parent): the child is the parent plus random full-rank deltas."""
    from pico import team_model

    built = {}

    def get(arch: str):
        if arch not in built:
            root = tmp_path_factory.mktemp(arch)
            parent = llama_pico(root / "parent") if arch == "llama_pico" else \
                team_model(root / "parent", arch, "unigram", seed=0)
            built[arch] = nudged(parent, root / "child", seed=1), parent
        return built[arch]
    return get


def batch(tokenizer, rows: int = 2, length: int = 48) -> torch.Tensor:
    ids = tokenizer(TEXT)["input_ids"]
    return torch.tensor([ids[i * length:(i + 1) * length] for i in range(rows)])


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """(child, parent): llama_pico and a copy trained for a few AdamW steps on text."""
    from transformers import AutoModelForCausalLM

    from studbook.operators.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("finetuned")
    parent = llama_pico(root / "parent")
    model = AutoModelForCausalLM.from_pretrained(str(parent))
    tokenizer = load_tokenizer(parent)
    ids = batch(tokenizer, rows=4, length=64)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(6):
        rows = ids[2 * (step % 2):2 * (step % 2) + 2]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]  # it learned something
    save_model(model, tokenizer, root / "child")
    return root / "child", parent


def logits(folder_or_model, ids):
    from transformers import AutoModelForCausalLM

    model = folder_or_model
    if isinstance(model, (str, Path)):
        model = AutoModelForCausalLM.from_pretrained(str(model))
    with torch.no_grad():
        return model(input_ids=ids).logits


def merged(adapter: Path, parent: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(parent))
    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()


OPTIONS = [  # (studbook keywords, mergekit-extract-lora arguments)
    ({"max_rank": 8}, ["--max-rank", "8"]),
    ({"max_rank": 8, "distribute_scale": False}, ["--max-rank", "8", "--no-distribute-scale"]),
    ({"sv_epsilon": 0.12}, ["--sv-epsilon", "0.12"]),  # ranks differ by module: rank_pattern
    ({"max_rank": 4, "exclude": ["mlp"], "modules_to_save": ["o_proj"]},
     ["--max-rank", "4", "-e", "mlp", "--save-module", "o_proj"]),
    # lora_embedding_A/B; llama_pico's tied lm_head kept whole (see test_what_peft_cannot_carry_is_refused)
    ({"max_rank": 4, "embed_lora": True, "modules_to_save": ["lm_head"], "include": ["embed", "layers.1"]},
     ["--max-rank", "4", "--embed-lora", "--save-module", "lm_head", "-i", "embed", "-i", "layers.1"]),
]


def mergekit(arguments: list[str]) -> None:
    """`mergekit-extract-lora ARGUMENTS` in this process. Its `--save-module` arrives from
    click as a tuple, which `plan_extraction` then `.append`s to (AttributeError in 0.1.5
    whenever an embedding is added): the parsed options are passed on as lists."""
    from mergekit.scripts.extract_lora import main

    context = main.make_context("mergekit-extract-lora", list(arguments))
    main.callback(**{k: list(v) if isinstance(v, tuple) else v for k, v in context.params.items()})


@pytest.mark.parametrize("arch", ["llama_pico", "mistral"])
def test_adapter_is_mergekits_bit_for_bit(pairs, tmp_path, arch):
    child, parent = pairs(arch)
    for index, (options, arguments) in enumerate(OPTIONS):
        theirs, ours = tmp_path / f"mergekit{index}", tmp_path / f"studbook{index}"
        mergekit(["--model", str(child), "--base-model", str(parent), "--out-path", str(theirs), *arguments])
        facts = extract_lora(child, parent, ours, **options)
        want, got = load_file(str(theirs / "adapter_model.safetensors")), \
            load_file(str(ours / "adapter_model.safetensors"))
        assert sorted(got) == sorted(want), options
        for name in want:
            assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), (options, name)
        config = json.loads((theirs / "adapter_config.json").read_text())
        config["target_modules"] = sorted(config["target_modules"])  # mergekit: a set's order
        assert json.loads((ours / "adapter_config.json").read_text()) == config, options
        assert facts["rank"] == config["r"] and bool(config["rank_pattern"]) == ("sv_epsilon" in options)
        assert facts["decomposed_modules"] == sum(1 for n in want if n.endswith(("lora_A.weight", "lora_embedding_A")))
        if "exclude" in options:  # the MLP is left out (mergekit: silently): the facts say so
            assert facts["dropped"] and all(".mlp." in name for name in facts["dropped"])
            assert "model.layers.0.self_attn.o_proj.weight" not in facts["dropped"]
    assert any(".lora_embedding_A" in name for name in got)
    assert {p.name for p in ours.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                "tokenizer_config.json"}


def test_bfloat16_deltas_are_taken_in_bfloat16_as_mergekit_does(pairs, tmp_path):
    child, parent = pairs("llama_pico")
    for folder in (child, parent):
        shutil.copytree(folder, tmp_path / folder.name)
        file = tmp_path / folder.name / "model.safetensors"
        save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(file)).items()}, str(file),
                  metadata={"format": "pt"})
    child, parent = tmp_path / child.name, tmp_path / parent.name
    mergekit(["--model", str(child), "--base-model", str(parent), "--out-path", str(tmp_path / "theirs"),
              "--max-rank", "8"])
    extract_lora(child, parent, tmp_path / "ours", max_rank=8)
    want = load_file(str(tmp_path / "theirs" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / "ours" / "adapter_model.safetensors"))
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == torch.bfloat16 and torch.equal(got[name], want[name]), name


def test_full_rank_adapter_gives_the_fine_tuned_child_back(finetuned, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studbook.operators.tokenizer import load_tokenizer

    child, parent = finetuned
    facts = extract_lora(child, parent, tmp_path / "full")  # max_rank 128 > every dimension
    ids = batch(load_tokenizer(child))
    want = logits(child, ids)
    full = (logits(merged(tmp_path / "full", parent), ids) - want).abs().max().item()
    assert full < 1e-4
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(parent)),
                                         str(tmp_path / "full"))
    assert (logits(unmerged, ids) - want).abs().max().item() < 1e-4
    assert facts["discarded_energy"] == 0 and facts["rank"] == 32  # hidden size: every singular value
    assert facts["decomposed_modules"] == 14 and facts["dropped"] == []
    # embeddings, the tied lm_head and the norms are kept whole
    assert facts["modules_to_save"] == ["embed_tokens", "input_layernorm", "post_attention_layernorm",
                                        "norm", "lm_head"]
    assert facts["full_rank_modules"] == 2 + 2 * 2 + 1

    low = extract_lora(child, parent, tmp_path / "low", max_rank=2)
    error = (logits(merged(tmp_path / "low", parent), ids) - want).abs().max().item()
    print(f"\nfull rank: max |logits diff| {full:.3g}, size ratio {facts['size_ratio']}; rank 2: "
          f"max |logits diff| {error:.3g}, size ratio {low['size_ratio']}, "
          f"discarded energy {low['discarded_energy']}")
    assert low["adapter_bytes"] < low["full_bytes"] and low["size_ratio"] < 1 < facts["size_ratio"]
    assert low["rank"] == 2 and low["adapter_bytes"] < facts["adapter_bytes"]
    assert error > 100 * full
    # the discarded energy is the squared relative Frobenius error of the decomposed deltas
    child_w, parent_w = load_file(str(child / "model.safetensors")), load_file(str(parent / "model.safetensors"))
    factors = load_file(str(tmp_path / "low" / "adapter_model.safetensors"))
    lost = total = 0.0
    for name in factors:
        if name.endswith(".lora_A.weight"):
            module = name.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            delta = (child_w[f"{module}.weight"] - parent_w[f"{module}.weight"]).double()
            approx = factors[name.replace("lora_A", "lora_B")].double() @ factors[name].double()
            lost += float(((delta - approx) ** 2).sum())
            total += float((delta ** 2).sum())
    assert 0 < low["discarded_energy"] < 1 and lost / total == pytest.approx(low["discarded_energy"], rel=1e-4)
    assert low["max_module_discarded_energy"] >= low["discarded_energy"]


def test_a_bias_that_moved_keeps_its_module_whole(tmp_path):
    """Qwen2's q/k/v have biases: PEFT drops mergekit's `lora_B.bias`, so a module whose bias
    moved is saved at full rank (by its full name), the others are decomposed."""
    from pico import ARCHITECTURES
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = build_tokenizer(128)
    config = AutoConfig.for_model("qwen2", **ARCHITECTURES["qwen2"], vocab_size=len(tokenizer),
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    parent = tmp_path / "parent"
    save_model(AutoModelForCausalLM.from_config(config), tokenizer, parent)
    child = nudged(parent, tmp_path / "child", seed=3, skip=lambda n: n.endswith(".bias") and ".layers.1." in n)
    facts = extract_lora(child, parent, tmp_path / "adapter")
    moved = [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
    assert facts["full_rank_for_bias"] == moved and facts["modules_to_save"][-3:] == moved
    assert facts["decomposed_modules"] == 14 - 3
    names = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.bias" in names
    assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in names
    assert not any(n.endswith("lora_B.bias") for n in names)
    ids = torch.arange(3, 60).unsqueeze(0)
    assert (logits(merged(tmp_path / "adapter", parent), ids) - logits(child, ids)).abs().max() < 1e-4


def test_what_peft_cannot_carry_is_refused(pairs, tmp_path):
    child, parent = pairs("llama_pico")
    with pytest.raises(StudbookError, match="tied to") as info:  # PEFT merges tied deltas twice
        extract_lora(child, parent, tmp_path / "a", embed_lora=True)
    assert info.value.key == "embed_lora" and not (tmp_path / "a").exists()
    # the tied lm_head kept whole: the embedding's delta is merged once, and runs unmerged too
    extract_lora(child, parent, tmp_path / "a", embed_lora=True, modules_to_save=["lm_head"])
    ids = torch.arange(3, 60).unsqueeze(0)
    assert (logits(merged(tmp_path / "a", parent), ids) - logits(child, ids)).abs().max() < 1e-4
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/gpt2_pico.yaml").read_text()))
    save_model(build_model(spec, seed=0), build_tokenizer(128), tmp_path / "gpt2")
    with pytest.raises(StudbookError, match="nothing to decompose.*Conv1D"):  # mergekit: max() of nothing
        extract_lora(tmp_path / "gpt2", tmp_path / "gpt2", tmp_path / "b")
    with pytest.raises(StudbookError, match="below sv_epsilon") as info:
        extract_lora(child, parent, tmp_path / "c", sv_epsilon=1e3)
    assert info.value.key == "sv_epsilon" and not (tmp_path / "c").exists()


@pytest.mark.parametrize("parameters,key", [
    ({"max_rank": 0}, "parameters.max_rank"),
    ({"sv_epsilon": -0.1}, "parameters.sv_epsilon"),
    ({"max_rnak": 8}, "parameters.max_rnak"),
    ({"exclude": ["mlp("]}, "parameters.exclude"),
])
def test_bad_parameters_name_the_key(parameters, key):
    from studbook.core.config import validate
    from studbook.operators import methods

    method = methods.get("extract_lora")
    with pytest.raises(StudbookError) as info:
        validate(method.parameters, parameters, file="generations/x/recipe.yaml", prefix="parameters")
    assert info.value.key == key and info.value.file == "generations/x/recipe.yaml"
    assert method.kind(method.parameters()) == "adapter" and method.parent_kinds == ("model",)
    assert (method.min_parents, method.max_parents, method.relation) == (2, 2, "adapter")


def test_breeding_method_checks_then_writes_an_adapter_on_parents_1(finetuned, tmp_path, monkeypatch):
    """The method on [child, parent] as the breed stage calls it: its check names the recipe
    and key, its facts pin the base, and load_artifact merges the adapter back into the child."""
    from studbook.operators import methods
    from studbook.operators.artifacts import load_artifact, weights_sha256, write_meta
    from studbook.repository.refs import BreedContext, Parent

    monkeypatch.chdir(tmp_path)
    child, parent = finetuned
    shutil.copytree(child, "models/kid")
    shutil.copytree(parent, "models/par")
    method = methods.get("extract_lora")
    recipe_file = "generations/ex/recipe.yaml"

    def context(parameters: dict, parents=("kid", "par")) -> BreedContext:
        return BreedContext(recipe=None, params=method.parameters(**parameters),
                            parents=[Parent(name, "model") for name in parents], out_dir=Path("bred"),
                            contract_name="stdlib_pico", recipe_file=recipe_file)

    with pytest.raises(StudbookError, match="tied to") as info:
        method.check(context({"embed_lora": True}), recipe_file)
    assert (info.value.file, info.value.key) == (recipe_file, "parameters.embed_lora")
    with pytest.raises(StudbookError, match="nothing to decompose") as info:
        method.check(context({"include": ["norm"]}), recipe_file)
    assert info.value.key == "parameters.include"
    ctx = context({"max_rank": 16})
    method.check(ctx, recipe_file)
    Path("bred").mkdir()
    facts = method.breed(ctx)
    assert facts["base"] == {"name": "par", "path": "models/par", "sha256": weights_sha256("models/par")}
    assert facts["child"] == {"name": "kid", "sha256": weights_sha256("models/kid")} and facts["rank"] == 16
    config = json.loads(Path("bred/adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "models/par" and config["r"] == 16
    write_meta("bred", {"base": facts["base"]})  # what the breed stage records from the facts
    ids = torch.arange(3, 60).unsqueeze(0)
    assert torch.allclose(logits(load_artifact("bred"), ids), logits(merged(Path("bred"), parent), ids))


@pytest.mark.slow  # three generations through propose and the three stages, on the real corpus
def test_breeding_method_stores_a_fine_tune_as_an_adapter_on_its_parent(studbook):
    """Through propose and the breed stage: parents [child, parent]; the artifact is an
    adapter on parents[1], pinned by sha256, and load_artifact merges it back into the child."""
    from stagehelp import run_stage

    from studbook.operators.artifacts import (
        load_artifact,
        load_model,
        read_meta,
        weights_sha256,
    )
    from studbook.repository.proposal import propose

    pico = {"contract": "stdlib_pico", "model": "llama_pico", "data": "stdlib_all"}
    propose("par", "scratch", [], 0, {**pico, "train": "none"})
    run_stage("breed", "par")
    propose("kid", "finetune", ["par"], 0, {**pico, "train": "pico"})  # a few real training steps
    run_stage("breed", "kid")
    with pytest.raises(StudbookError) as info:  # checked when the recipe is loaded
        propose("bad", "extract_lora", ["kid", "par"], 0, {**pico, "train": "none"},
                parameters={"max_rank": 0})
    assert info.value.key == "parameters.max_rank" and info.value.file.endswith("generations/bad/recipe.yaml")
    propose("ex", "extract_lora", ["kid", "par"], 0, {**pico, "train": "none"})
    summary = run_stage("breed", "ex")
    adapter = Path("adapters/ex")
    meta = read_meta(adapter)
    assert meta["kind"] == "adapter" and meta["relation"] == "adapter"
    assert meta["base"] == {"name": "par", "path": "models/par", "sha256": weights_sha256("models/par")}
    facts = meta["breed"]["facts"]
    assert facts["child"]["name"] == "kid" and facts["discarded_energy"] == 0
    assert summary["rank"] == facts["rank"] and summary["size_ratio"] == facts["size_ratio"]
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "models/par"
    ids = torch.arange(3, 60).unsqueeze(0)
    want = logits(load_model("models/kid"), ids)
    assert not torch.allclose(want, logits(load_model("models/par"), ids))  # training moved it
    assert (logits(load_artifact(adapter), ids) - want).abs().max() < 1e-4
    # its card: the adapter's size against the full child's, and the child's gain kept
    for name in ("par", "kid", "ex"):
        run_stage("evaluate", name)
        run_stage("record", name)
    card = Path("cards/ex.md").read_text()
    twin = json.loads(Path("cards/ex.json").read_text())
    section = card.split("## Extraction", 1)[1].split("## Gate", 1)[0]
    assert f"| size ratio (adapter / full) | {facts['size_ratio']:.3f} |" in section
    kid, par = twin["primary"]["parents"]["kid"], twin["primary"]["parents"]["par"]
    kept = (twin["primary"]["child"] - par) / (kid - par)
    assert abs(kept - 1) < 1e-3  # full rank: all of the fine-tune's gain
    assert f"| gain over the parent kept | {100 * kept:.1f} % |" in section
    # at a low rank the adapter is smaller than the model and keeps part of the gain
    propose("ex2", "extract_lora", ["kid", "par"], 0, {**pico, "train": "none"}, parameters={"max_rank": 2})
    for stage in ("breed", "evaluate", "record"):
        run_stage(stage, "ex2")
    low = read_meta(Path("adapters/ex2"))["breed"]["facts"]
    twin = json.loads(Path("cards/ex2.json").read_text())
    section = Path("cards/ex2.md").read_text().split("## Extraction", 1)[1].split("## Gate", 1)[0]
    kept = (twin["primary"]["child"] - par) / (kid - par)
    assert low["rank"] == 2 and low["size_ratio"] < 1 and 0 < low["discarded_energy"] < 1
    assert 0 < kept < 0.999, kept
    assert f"| size ratio (adapter / full) | {low['size_ratio']:.3f} |" in section
    assert f"| gain over the parent kept | {100 * kept:.1f} % |" in section
    print(f"extract_rank2_size_ratio: {low['size_ratio']:.3f}  gain_kept: {100 * kept:.1f} %  "
          f"discarded_energy: {100 * low['discarded_energy']:.1f} %")
