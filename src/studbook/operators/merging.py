"""Full-weight merges from mergekit-format configs, streamed tensor by tensor.

`merge_plan` decides which output tensor comes from which input tensors (models or
slices, layer ranges, gradients) in mergekit's order; this module runs the plan: for each
output tensor it loads that tensor of each input, resolves the method's parameters,
merges, and appends the result to the output file; then writes the config (with the
layer count of a slices merge) and the tokenizer.

Memory: every input is opened, read for one tensor and closed again (safetensors maps
the file; closing unmaps it), so the peak is the output being built plus one tensor per
input, not every parent at once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from studbook.core.errors import StudbookError
from studbook.operators.merge_config import FilterValue, MergeConfig, parse_config
from studbook.operators.safetensors_io import (SafetensorsWriter, parse_size, read_header, read_tensor,
                                               shard_layout, torch_dtype, writer_bytes)


def run_merge(config: MergeConfig, resolve: Callable[[str], Path], out_dir: str | Path,
              seed: int = 0, on_tensor: Callable[[int, int, str], None] | None = None,
              out_shard_size: str | int | None = None) -> dict:
    """Merge into `out_dir` (weights, config, tokenizer); `resolve` maps a model name to a folder."""
    import json

    import torch
    from studbook.operators import merge_plan, merges

    method = merges.get(config.merge_method)
    out_dir = Path(out_dir)
    referenced = list(dict.fromkeys(
        ([config.base_model] if config.base_model else [])
        + ([m.model for m in config.models] if config.models else [s.model for p in config.slices for s in p.sources])
        + [p.base_model for p in config.slices or [] if p.base_model]))
    files, headers, configs = {}, {}, {}
    for name in referenced:
        folder = resolve(name)
        files[name], headers[name] = read_header(folder)
        configs[name] = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    donor = config.base_model or referenced[0]  # mergekit's config and tokenizer donor
    # the layer layout matters for slices and gradients only: a `models:` merge without a
    # gradient is tensor by tensor, by name, in name order (mergekit's order for it too)
    layered = config.slices is not None or _has_gradient(config)
    arch = merge_plan.architecture(configs[donor].get("model_type"), file=str(resolve(donor))) if layered else None
    if config.models is not None:
        for name in referenced:  # models mode: every model has the same tensors
            check_same_tensors(donor, headers[donor], name, headers[name])
    counts = {n: int(configs[n].get(arch.num_layers_key, 0)) if arch else 0 for n in referenced}
    if arch and config.models is not None and not all(counts.values()):
        raise StudbookError(f"a gradient runs over the layers, and a config.json has no "
                            f"'{arch.num_layers_key}'", key="parameters")
    slices = merge_plan.slices_of(config, counts)
    planned = merge_plan.plan(slices, arch, {n: list(h) for n, h in headers.items()})
    tokenizer_donor = _tokenizer_source(config, resolve, referenced, headers, donor)
    # one seed per merge, as mergekit's `random_seed` (transformers' set_seed): the random
    # methods draw from torch's global generator, tensor after tensor in the planned order
    torch.manual_seed(seed)
    out_dtype = getattr(torch, config.out_dtype) if config.out_dtype else None
    work_dtype = getattr(torch, config.dtype) if config.dtype else None

    def written(model: str, name: str) -> str:
        if out_dtype is not None:
            return config.out_dtype
        loaded = work_dtype or torch_dtype(headers[model][name][1])
        return str(method.output_dtype(loaded)).removeprefix("torch.")
    layout = {p.output: (headers[p.inputs[0][0]][p.inputs[0][1]][0], written(*p.inputs[0])) for p in planned}
    shards = shard_layout(layout, parse_size(out_shard_size))
    out_dir.mkdir(parents=True, exist_ok=True)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    by_output = {p.output: p for p in planned}
    done = 0
    for shard, file in zip(shards, names):
        with SafetensorsWriter(out_dir / file, {n: layout[n] for n in shard}) as writer:
            for output in shard:
                item = by_output[output]
                merged = _merge_one(method, config, slices[item.slice], item, files, work_dtype)
                writer.write(output, merged.to(out_dtype) if out_dtype else merged)
                del merged
                done += 1
                if on_tensor:
                    on_tensor(done, len(planned), output)
    if len(shards) > 1:
        total = sum(writer_bytes(layout[n]) for n in layout)
        index = {"metadata": {"total_size": total},
                 "weight_map": {n: file for shard, file in zip(shards, names) for n in shard}}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    source = resolve(donor)
    for extra in ("config.json", "generation_config.json"):
        if (source / extra).is_file():
            shutil.copy2(source / extra, out_dir / extra)
    tokenizer_folder = resolve(tokenizer_donor)
    for extra in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_folder / extra).is_file():
            shutil.copy2(tokenizer_folder / extra, out_dir / extra)
    layers = sum(s.sources[0].stop - s.sources[0].start for s in slices) if arch else None
    _write_config(out_dir, config, arch, slices, configs, layers)
    return {"merge_method": method.name, "tensors": len(planned), "shards": len(shards),
            "models": len([n for n in referenced if n != config.base_model]), "base_model": config.base_model,
            "layers": layers, "deterministic": method.deterministic}


def _has_gradient(config: MergeConfig) -> bool:
    """A list of values (directly, or as a filter entry's value) anywhere in a models merge."""
    for scope in [config.parameters] + [m.parameters for m in config.models or []]:
        for value in scope.values():
            entries = value if isinstance(value, list) else []
            if any(not isinstance(e, FilterValue) or isinstance(e.value, list) for e in entries):
                return True
    return False


def _merge_one(method, config: MergeConfig, piece, item, files: dict, work_dtype):
    """One output tensor: its inputs in mergekit's roles and parameters at its `t`."""
    from studbook.operators.merge_plan import resolve

    base = piece.base
    models = [model for model, _ in item.inputs]
    input_name = dict(item.inputs)

    def load(model: str):
        tensor = read_tensor(files[model][input_name[model]], input_name[model])
        return tensor.to(work_dtype) if work_dtype else tensor

    role_base = base if method.base != "ignored" and base in models else None
    merged_in = [m for m in models if m != role_base]
    source_params = {}
    for source in piece.sources:  # every source naming the model, in order (mergekit's scopes)
        source_params.setdefault(source.model, []).append(source.parameters)
    per_model = [{key: resolve([*source_params.get(m, []), piece.parameters, config.parameters], key,
                               input_name[m], item.t, default, method.name)
                  for key, default in method.per_model.items()} for m in merged_in]
    shared = {key: resolve([piece.parameters, config.parameters], key, item.output, item.t, default, method.name)
              for key, default in method.shared.items()}
    base_tensor = load(role_base) if role_base else None
    tensors = [load(m) for m in merged_in]
    return method.merge(base_tensor, tensors, per_model, shared)


def _tokenizer_source(config: MergeConfig, resolve, referenced: list[str], headers: dict, donor: str) -> str:
    """The model whose tokenizer files the child gets. `tokenizer_source` (base, union or a
    model) is honoured when every input shares one vocabulary whose size is the embedding's
    row count: mergekit's permutation of embedding rows is then the identity, so the merged
    tensors are those of a merge without it. Other vocabularies are refused, not rebuilt."""
    if config.tokenizer_source is None:
        return donor
    wanted = config.tokenizer_source
    if wanted not in ("base", "union") and wanted not in referenced:
        raise StudbookError(f"tokenizer_source '{wanted}' is neither base, union nor a merged model",
                            key="tokenizer_source")
    source = donor if wanted in ("base", "union") else wanted
    vocab = {}
    for name in referenced:
        file = resolve(name) / "tokenizer.json"
        if not file.is_file():
            raise StudbookError(f"tokenizer_source needs every model's tokenizer.json: '{name}' has none",
                                key="tokenizer_source")
        from tokenizers import Tokenizer

        vocab[name] = Tokenizer.from_file(str(file)).get_vocab(with_added_tokens=True)
        rows = [shape[0] for tensor, (shape, _) in headers[name].items()
                if tensor.endswith(("embed_tokens.weight", "wte.weight", "lm_head.weight"))]
        if any(r != len(vocab[name]) for r in rows):
            raise StudbookError(f"tokenizer_source: '{name}' has {rows[0]} embedding rows for a vocabulary of "
                                f"{len(vocab[name])} tokens; studbook merges vocabularies only when they are "
                                "shared and fill the embedding", key="tokenizer_source")
        if vocab[name] != vocab[source]:
            raise StudbookError(f"tokenizer_source: '{name}' and '{source}' have different vocabularies; "
                                "studbook does not permute embeddings between vocabularies", key="tokenizer_source")
    return source


def _write_config(out_dir: Path, config: MergeConfig, arch, slices, configs: dict, layers: int | None) -> None:
    """The donor's config, with the layer count of a slices merge and every per-layer list
    (`layer_types`) rebuilt from the source layers (mergekit leaves it stale and Qwen2's
    config then fails to save), and the dtype when one is set."""
    import json

    file = out_dir / "config.json"
    if not file.is_file():
        return
    cfg = json.loads(file.read_text())
    if config.slices is not None and arch is not None:
        per_layer = {key: value for key, value in cfg.items()
                     if isinstance(value, list) and len(value) == cfg.get(arch.num_layers_key)}
        cfg[arch.num_layers_key] = layers
        for key in per_layer:
            rebuilt = []
            for piece in slices:
                source = piece.sources[0]
                rebuilt += configs[source.model][key][source.start:source.stop]
            cfg[key] = rebuilt
    if config.out_dtype or config.dtype:
        for key in ("torch_dtype", "dtype"):
            if key in cfg:
                cfg[key] = config.out_dtype or config.dtype
    file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def check_same_tensors(name_a: str, shapes_a: dict, name_b: str, shapes_b: dict) -> None:
    """Same tensor names and shapes, or a clear error naming both models and the key."""
    missing = sorted(set(shapes_a) ^ set(shapes_b))
    if missing:
        owner = name_a if missing[0] in shapes_a else name_b
        raise StudbookError(f"'{name_a}' and '{name_b}' differ in tensors: '{missing[0]}' is only "
                            f"in '{owner}' ({len(missing)} differing)", key=missing[0])
    for tensor, (shape, _dtype) in shapes_a.items():
        if shapes_b[tensor][0] != shape:
            raise StudbookError(f"'{name_a}' and '{name_b}' differ in the shape of '{tensor}': "
                                f"{list(shape)} vs {list(shapes_b[tensor][0])}", key=tensor)


def merge_from_yaml(config_file: str | Path, out_dir: str | Path, seed: int = 0,
                    on_tensor=None, out_shard_size: str | int | None = None) -> dict:
    """Run a mergekit YAML whose `model:` entries are local folders (like `mergekit-yaml`)."""
    from studbook.operators.artifacts import check_safe_folder
    from studbook.core.atomic import atomic_dir
    from studbook.core.config import load_yaml

    config_file = Path(config_file)
    config = parse_config(load_yaml(config_file), file=str(config_file))

    def resolve(name: str) -> Path:
        folder = Path(name) if Path(name).is_absolute() else (config_file.parent / name)
        if not folder.is_dir():
            folder = Path(name)
        check_safe_folder(folder)
        return folder

    with atomic_dir(out_dir) as tmp:
        return run_merge(config, resolve, tmp, seed=seed, on_tensor=on_tensor, out_shard_size=out_shard_size)
