"""Full-weight merges on pico models of two architectures.

mergekit-format YAML files run as-is through studbook and through mergekit itself
(installed in the test environment): the deterministic methods must give the same
tensors, bit for bit. DARE is checked against its definition with a fixed seed, and
SLERP against the textbook formula.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from studbook.operators.artifacts import build_model, save_model
from studbook.core.errors import StudbookError
from studbook.operators.merge_config import parse_config
from studbook.operators.merging import merge_from_yaml
from studbook.operators.merges.slerp import slerp
from studbook.repository.recipes import ModelSpec
from studbook.operators.tokenizer import build_tokenizer

from conftest import ROOT

ARCHITECTURES = ["llama_pico", "mistral", "gpt2_pico"]
RECIPES = Path(__file__).parent / "merge_recipes"
SEED = 7  # mergekit's --random-seed and the recipe seed: the stochastic methods draw the same


def make_family(root, arch: str) -> dict[str, str]:
    """A base and three children that differ from it by small random task vectors (and share
    its tokenizer, as a family does); `c`'s touches half the entries only, so methods that
    count overlaps (ram, sce) see both kinds."""
    import shutil

    from pico import team_model

    folders = {name: str(root / name) for name in ["base", "a", "b", "c"]}
    if arch in ("llama_pico", "gpt2_pico"):
        spec = ModelSpec.model_validate(yaml.safe_load((ROOT / f"conf/model/{arch}.yaml").read_text()))
        save_model(build_model(spec, seed=0), build_tokenizer(spec.context_length), folders["base"])
    else:  # a team's architecture with its own subword tokenizer, 4 layers for gradients
        team_model(root / "base", arch, "unigram", seed=0, num_hidden_layers=4)
    for index, name in enumerate(["a", "b", "c"], 1):
        shutil.copytree(folders["base"], folders[name])
        file = root / name / "model.safetensors"
        tensors = load_file(str(file))
        generator = torch.Generator().manual_seed(100 + index)
        for key, tensor in tensors.items():
            delta = 0.02 * torch.randn(tensor.shape, generator=generator)
            if name == "c":
                delta *= torch.rand(tensor.shape, generator=generator) < 0.5
            tensors[key] = tensor + delta
        save_file(tensors, str(file), metadata={"format": "pt"})
    return folders


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """arch -> (arch, folder, family), each built once (on first use) for the module."""
    built = {}

    def get(arch: str):
        if arch not in built:
            root = tmp_path_factory.mktemp(arch)
            built[arch] = arch, root, make_family(root, arch)
        return built[arch]
    return get


@pytest.fixture(scope="module", params=ARCHITECTURES)
def family(request, families):
    return families(request.param)


def recipe(path: Path) -> tuple[dict, dict]:
    """A mergekit YAML from tests/merge_recipes, and its header: `# parity: identical` (the
    tensors equal mergekit's, under its random_seed for the random methods) and optionally
    `# architectures: a b` (default: llama_pico and mistral; gpt2_pico on request, for its
    Conv1D weights and biases, keeping the default run short)."""
    text = path.read_text()
    header = dict(line[2:].split(": ", 1) for line in text.splitlines()
                  if line.startswith("# ") and line[2:].split(":")[0] in ("parity", "architectures"))
    return yaml.safe_load(text), header


ROWS = sorted(RECIPES.glob("*.yaml"))
PAIRS = sorted(((arch, row) for row in ROWS  # grouped by architecture: one family each
                for arch in recipe(row)[1].get("architectures", "llama_pico mistral").split()),
               key=lambda pair: ARCHITECTURES.index(pair[0]))


def write_config(root, folders, config: dict, name: str):
    text = yaml.safe_dump(config, sort_keys=False)
    for key, folder in folders.items():  # model names -> local folders, as mergekit reads them
        text = text.replace(f"model: {key}\n", f"model: {folder}\n")
        text = text.replace(f"base_model: {key}\n", f"base_model: {folder}\n")
    path = root / f"{name}.yaml"
    path.write_text(text)
    return path


def mergekit_merge(config_file: Path, out: Path, seed: int = SEED) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(yaml.safe_load(config_file.read_text())), str(out),
              MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=seed))
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("arch,row", PAIRS, ids=[f"{a}-{r.stem}" for a, r in PAIRS])
def test_mergekit_recipe_gives_mergekit_tensors(families, arch, row):
    arch, root, folders = families(arch)
    config, header = recipe(row)
    assert header.get("parity") == "identical", f"{row.name}: no '# parity: identical' header"
    config_file = write_config(root, folders, config, row.stem)
    facts = merge_from_yaml(config_file, root / f"studbook_{row.stem}", seed=SEED)
    theirs = mergekit_merge(config_file, root / f"mergekit_{row.stem}")
    ours = load_file(str(root / f"studbook_{row.stem}" / "model.safetensors"))
    assert sorted(ours) == sorted(theirs) and facts["tensors"] == len(ours)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype, f"{row.stem}: {name} is {ours[name].dtype}"
        assert torch.equal(ours[name], theirs[name]), f"{row.stem}: {name} differs"
    # and the merge did something: not a copy of any input
    for model in folders.values():
        inputs = load_file(str(Path(model) / "model.safetensors"))
        assert (set(ours) != set(inputs)
                or any(not torch.equal(ours[n], inputs[n].to(ours[n].dtype)) for n in ours))


def test_every_mergekit_method_is_registered_and_has_a_recipe_row():
    from mergekit.merge_methods import registered_methods

    from studbook.operators import merges

    assert len(registered_methods()) == 20
    assert set(merges.known()) == {m.spec.name for m in registered_methods()}
    assert {recipe(r)[0]["merge_method"] for r in ROWS} == set(merges.known())


def test_slerp_is_the_textbook_formula():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    half = slerp(0.5, a, b)
    # theta = 90 degrees: both coefficients are sin(45)/sin(90)
    torch.testing.assert_close(half, torch.tensor([[math.sqrt(0.5), 2 * math.sqrt(0.5)]]))
    torch.testing.assert_close(slerp(0.0, a, b), a)
    torch.testing.assert_close(slerp(1.0, a, b), b)
    nearly = torch.tensor([[1.0, 1e-6]])
    torch.testing.assert_close(slerp(0.25, a, nearly), 0.75 * a + 0.25 * nearly)  # parallel: lerp


def test_streamed_file_is_valid_safetensors_with_declared_dtype(family):
    _arch, root, folders = family
    task_arithmetic = recipe(RECIPES / "task_arithmetic.yaml")[0]
    merge_from_yaml(write_config(root, folders, task_arithmetic, "f32"), root / "f32")
    config = dict(task_arithmetic, out_dtype="bfloat16")
    merge_from_yaml(write_config(root, folders, config, "bf16"), root / "bf16")
    tensors = load_file(str(root / "bf16" / "model.safetensors"))
    full = load_file(str(root / "f32" / "model.safetensors"))
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16} and sorted(tensors) == sorted(full)
    for name, tensor in tensors.items():
        assert torch.equal(tensor, full[name].to(torch.bfloat16))


BAD = [
    ({"merge_method": "frankenmerge", "models": [{"model": "a"}]}, "merge_method", "unknown merge method"),
    ({"merge_method": "ties", "models": [{"model": "a", "parameters": {"weight": 1}}]}, "base_model",
     "needs a base_model"),
    ({"merge_method": "linear", "models": [{"model": "a"}]}, "models[0].parameters.weight",
     "needs 'weight'"),
    ({"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1, "densty": 1}}]},
     "models[0].parameters.densty", "no per-model parameter 'densty'"),
    ({"merge_method": "slerp", "base_model": "x", "parameters": {"t": 0.5},
      "models": [{"model": "a"}, {"model": "b"}]}, "models", "merges 1 to 1 model"),
    ({"merge_method": "linear", "tokenizer": {"tokens": {}}, "models": [{"model": "a"}]}, "tokenizer",
     "unknown key"),
]


@pytest.mark.parametrize("config,key,words", BAD, ids=[b[1] for b in BAD])
def test_bad_merge_configs_name_the_key(config, key, words):
    with pytest.raises(StudbookError) as info:
        parse_config(config, file="merge.yaml")
    assert info.value.file == "merge.yaml" and info.value.key == key
    assert words in str(info.value)


def test_magnitude_pruning_breaks_exact_ties_as_mergekit_does():
    from mergekit.sparsify import magnitude
    from peft.utils.merge_utils import magnitude_based_pruning

    from studbook.operators.merges._task_vectors import magnitude_prune

    generator = torch.Generator().manual_seed(0)
    base = 0.02 * torch.randn(512, 256, generator=generator)
    child = base + 0.02 * torch.randn(base.shape, generator=generator)
    delta = child - base  # on the base's floating-point grid: many magnitudes tie exactly
    assert delta.abs().unique().numel() < delta.numel()
    for density in (0.5, 0.3):
        ours = magnitude_prune(delta, density)
        assert torch.equal(ours, magnitude(delta, density))
        assert (ours != 0).sum() == int(density * delta.numel())
    # PEFT's top-k keeps the same number of entries but may pick others among the ties
    peft = magnitude_based_pruning(delta, 0.3)
    assert (peft != 0).sum() == (magnitude_prune(delta, 0.3) != 0).sum()


def test_magnitude_pruning_sorts_only_when_ties_straddle_the_cut(monkeypatch):
    from mergekit.sparsify import magnitude

    from studbook.operators.merges._task_vectors import magnitude_prune

    sorts = []
    argsort = torch.argsort
    monkeypatch.setattr(torch, "argsort", lambda *a, **k: sorts.append(1) or argsort(*a, **k))
    distinct = torch.arange(1, 4097, dtype=torch.float32).reshape(64, 64) * (-1) ** torch.arange(4096).reshape(64, 64)
    straddling = torch.tensor([3.0, -1.0, 2.0, -2.0, 2.0, 0.5, -2.0, 1.0])  # keep 3: one of three 2s
    tiny = torch.tensor([[0.1, -0.4], [0.4, 0.2]])  # density below 1/n keeps one entry
    cases = [(distinct, 0.25, 0), (straddling, 0.4, 1), (tiny, 0.1, 1), (tiny, 0.0, 0), (tiny, 1.0, 0)]
    for delta, density, expected_sorts in cases:
        sorts.clear()
        ours = magnitude_prune(delta, density)
        assert len(sorts) == expected_sorts, (delta.shape, density)
        assert torch.equal(ours, magnitude(delta, density))
    assert (magnitude_prune(distinct, 0.25) != 0).sum() == 1024
