"""mergekit's config surface beyond the methods: gradients, slices that change the layer
count (a valid config written), tokenizer_source, sharded inputs and outputs — each
against mergekit 0.1.5 run in the same process, or by definition where mergekit has no
answer (a Qwen2 frankenmerge: mergekit fails to save its config)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from studbook.core.errors import StudbookError
from studbook.operators.merge_plan import evaluate
from studbook.operators.merge_config import parse_config
from studbook.operators.merging import merge_from_yaml

from test_merges import make_family, mergekit_merge, write_config


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistral_cfg")
    return root, make_family(root, "mistral")


@pytest.mark.parametrize("setting", [[0, 1], [0.2, 0.9, 0.4], [1, 0.5, 0.7, 0.3, 0], [True, False, True],
                                     [{"filter": "mlp", "value": [0.1, 0.8]}, {"value": 0.5}],
                                     [{"filter": "attn", "value": 0.3}]])
def test_gradients_and_filters_resolve_as_mergekit_does(setting):
    from mergekit.config import ConditionalParameter, evaluate_setting

    theirs_setting = [ConditionalParameter(**e) if isinstance(e, dict) else e for e in setting]
    ours_setting = parse_config({"merge_method": "linear", "models": [{"model": "a"}],
                                 "parameters": {"weight": setting, "normalize": False}}, file="m.yaml").parameters["weight"]
    for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight", "model.norm.weight"):
        for t in (0.0, 1 / 3, 0.5, 2 / 3, 1.0):
            theirs = evaluate_setting(name, theirs_setting, t, validate=lambda v: v)
            assert evaluate(ours_setting, name, t) == theirs, (setting, name, t)


def test_a_frankenmerge_writes_a_config_with_its_layers_and_loads(mistral):
    from transformers import AutoModelForCausalLM

    root, folders = mistral
    config = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": "a", "layer_range": [0, 4]}]},
        {"sources": [{"model": "b", "layer_range": [1, 3]}]}]}
    config_file = write_config(root, folders, config, "grow")
    facts = merge_from_yaml(config_file, root / "grow")
    theirs = mergekit_merge(config_file, root / "grow_mergekit")
    ours = load_file(str(root / "grow" / "model.safetensors"))
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[n], theirs[n]) for n in ours)
    written = json.loads((root / "grow" / "config.json").read_text())
    assert written["num_hidden_layers"] == facts["layers"] == 6
    b = load_file(folders["b"] + "/model.safetensors")
    assert torch.equal(ours["model.layers.5.mlp.up_proj.weight"], b["model.layers.2.mlp.up_proj.weight"])
    model = AutoModelForCausalLM.from_pretrained(root / "grow")
    assert len(model.model.layers) == 6
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_a_qwen2_frankenmerge_rebuilds_layer_types_where_mergekit_fails(tmp_path):
    from transformers import AutoModelForCausalLM

    from pico import team_model

    for name, seed in (("a", 0), ("b", 1)):
        team_model(tmp_path / name, "qwen2", "bpe", seed=seed)
    config = {"merge_method": "passthrough", "slices": [
        {"sources": [{"model": "a", "layer_range": [0, 2]}]}, {"sources": [{"model": "b", "layer_range": [0, 1]}]}]}
    merge_from_yaml(write_config(tmp_path, {k: str(tmp_path / k) for k in "ab"}, config, "q"), tmp_path / "q")
    written = json.loads((tmp_path / "q" / "config.json").read_text())
    assert written["num_hidden_layers"] == 3 and len(written["layer_types"]) == 3
    ours, b = load_file(str(tmp_path / "q" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert torch.equal(ours["model.layers.2.self_attn.q_proj.bias"], b["model.layers.0.self_attn.q_proj.bias"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert len(model.model.layers) == 3


def test_sharded_inputs_and_outputs_match_mergekit(mistral):
    from transformers import AutoModelForCausalLM

    root, folders = mistral
    sharded = {}
    for name in ("base", "a", "b"):  # the inputs re-saved as several shards with an index
        model = AutoModelForCausalLM.from_pretrained(folders[name])
        sharded[name] = str(root / f"{name}_sharded")
        model.save_pretrained(sharded[name], max_shard_size="40KB")
        assert (root / f"{name}_sharded" / "model.safetensors.index.json").is_file()
    config = {"merge_method": "ties", "base_model": "base", "dtype": "float32", "models": [
        {"model": "a", "parameters": {"weight": 0.7, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 0.4, "density": 0.3}}]}
    single = merge_from_yaml(write_config(root, folders, config, "single"), root / "single")
    config_file = write_config(root, sharded, config, "shards")
    facts = merge_from_yaml(config_file, root / "out_sharded", out_shard_size="20K")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(MergeConfiguration.model_validate(yaml.safe_load(config_file.read_text())), str(root / "mk_sharded"),
              MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, out_shard_size=20_000))
    ours_index = json.loads((root / "out_sharded" / "model.safetensors.index.json").read_text())
    theirs_index = json.loads((root / "mk_sharded" / "model.safetensors.index.json").read_text())
    assert ours_index["weight_map"] == theirs_index["weight_map"] and facts["shards"] > 1
    assert list(ours_index["weight_map"]) == list(theirs_index["weight_map"])  # the same write order
    whole = load_file(str(root / "single" / "model.safetensors"))
    assert single["shards"] == 1 and not (root / "single" / "model.safetensors.index.json").exists()
    for shard in sorted(set(theirs_index["weight_map"].values())):
        ours, theirs = load_file(str(root / "out_sharded" / shard)), load_file(str(root / "mk_sharded" / shard))
        assert sorted(ours) == sorted(theirs)
        for name in ours:
            assert torch.equal(ours[name], theirs[name]) and torch.equal(ours[name], whole[name])
    assert ours_index["metadata"]["total_size"] == sum(t.numel() * 4 for t in whole.values())


def test_tokenizer_source_with_a_shared_vocabulary_gives_mergekit_tensors(mistral):
    root, folders = mistral
    config = {"merge_method": "linear", "dtype": "float32", "tokenizer_source": "base", "base_model": "base",
              "parameters": {"weight": 0.5}, "models": [{"model": "a"}, {"model": "b"}]}
    config_file = write_config(root, folders, config, "tok")
    merge_from_yaml(config_file, root / "tok")
    theirs = mergekit_merge(config_file, root / "tok_mergekit")
    ours = load_file(str(root / "tok" / "model.safetensors"))
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs) and sorted(ours) == sorted(theirs)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(root / "tok").get_vocab() == \
        AutoTokenizer.from_pretrained(folders["base"]).get_vocab()


def test_tokenizer_source_refuses_vocabularies_that_differ(tmp_path):
    from pico import team_model

    team_model(tmp_path / "a", "mistral", "unigram")
    team_model(tmp_path / "b", "mistral", "bpe")
    config = {"merge_method": "linear", "tokenizer_source": "union", "base_model": "a",
              "parameters": {"weight": 0.5}, "models": [{"model": "a"}, {"model": "b"}]}
    with pytest.raises(StudbookError, match="different vocabularies|embedding rows"):
        merge_from_yaml(write_config(tmp_path, {k: str(tmp_path / k) for k in "ab"}, config, "u"), tmp_path / "u")
    assert not (tmp_path / "u").exists()  # nothing written


@pytest.mark.parametrize("config,key,words", [
    ({"merge_method": "ties", "base_model": "base", "slices": [{"sources": [
        {"model": "a", "layer_range": [0, 2], "parameters": {"weight": 1}}]}]}, "slices[0].sources", "among"),
    ({"merge_method": "passthrough", "slices": [{"sources": [
        {"model": "a", "layer_range": [0, 2]}, {"model": "b", "layer_range": [0, 1]}]}]}, "slices[0].sources",
     "same positive number of layers"),
    ({"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1}}],
      "slices": [{"sources": [{"model": "a", "layer_range": [0, 1]}]}]}, "models", "exactly one"),
    ({"merge_method": "linear", "modules": {}, "models": [{"model": "a"}]}, "modules", "unknown key"),
])
def test_bad_slices_name_the_key(config, key, words):
    with pytest.raises(StudbookError) as info:
        parse_config(config, file="merge.yaml")
    assert info.value.key == key and words in str(info.value)
