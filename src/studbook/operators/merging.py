"""Full-weight merges from mergekit-format configs, streamed tensor by tensor.

A config is mergekit's YAML (`merge_method`, `models`, `base_model`, `parameters`,
`dtype`), so a recipe written for `mergekit-yaml` runs here as-is. Parameters are
scalars or mergekit's filter lists (`[{filter: self_attn, value: 0.3}, {value: 0.5}]`).
Keys this executor does not implement (slices, gradients, tokenizer surgery) are
refused by name rather than silently ignored.

Memory: every input is opened, read for one tensor and closed again (safetensors maps
the file; closing unmaps it), so the peak is the output being built plus one tensor per
input, not every parent at once.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from studbook.core.config import validate
from studbook.core.errors import StudbookError

Scalar = Union[float, int, bool]


Gradient = Annotated[list[Scalar], Field(min_length=1)]  # interpolated over a slice's layers


class FilterValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    filter: str | None = None
    value: Union[Scalar, Gradient]


ParamValue = Union[Scalar, Gradient, list[FilterValue]]


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    parameters: dict[str, ParamValue] = Field(default_factory=dict)


class SourceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    layer_range: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]
    parameters: dict[str, ParamValue] = Field(default_factory=dict)


class SliceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sources: list[SourceEntry] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    residual_weight: None = None  # accepted by mergekit, used nowhere: only its null is accepted


class MergeConfig(BaseModel):
    """mergekit's configuration format (`modules:`, `tokenizer:` and `chat_template` are
    refused by name: no architecture studbook breeds has several modules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    merge_method: str
    models: list[ModelEntry] | None = Field(default=None, min_length=1)
    slices: list[SliceEntry] | None = Field(default=None, min_length=1)
    base_model: str | None = None
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    out_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    # base, union or a model: studbook needs a vocabulary every input shares
    tokenizer_source: str | None = None


def parse_config(data: Any, file: str, prefix: str = "") -> MergeConfig:
    """Validate a mergekit-format mapping; errors name the file and key."""
    from studbook.operators import merges

    config = validate(MergeConfig, data, file=file, prefix=prefix)
    at = f"{prefix}." if prefix else ""
    if (config.models is None) == (config.slices is None):
        raise StudbookError("a merge config has exactly one of `models` and `slices`", file=file,
                            key=f"{at}models")
    method = merges.get(config.merge_method, file=file, key=f"{at}merge_method")
    if config.slices is not None:
        _check_slices(config, method, file, at)
        return config
    if method.needs_base and config.base_model is None:
        raise StudbookError(f"'{method.name}' needs a base_model", file=file, key=f"{at}base_model")
    count = len(inputs(config, method))
    if count < method.min_models or (method.max_models and count > method.max_models):
        besides = "" if method.base == "ignored" else " besides the base"
        raise StudbookError(f"'{method.name}' merges {method.min_models} to "
                            f"{method.max_models or 'any'} model(s){besides}, got {count}",
                            file=file, key=f"{at}models")
    listed = {e.model: i for i, e in enumerate(config.models)}
    for name in inputs(config, method):
        if name in listed:
            continue
        for key, default in method.per_model.items():  # an appended base: only global values
            if default is None and key not in config.parameters:
                raise StudbookError(f"'{method.name}' averages in base_model '{name}' (as mergekit "
                                    f"does) and needs '{key}' for it: list it under models or set a "
                                    f"global '{key}'", file=file, key=f"{at}parameters.{key}")
    for index, entry in enumerate(config.models):
        for key in entry.parameters:
            if key not in method.per_model:
                raise StudbookError(f"'{method.name}' has no per-model parameter '{key}' "
                                    f"(known: {', '.join(method.per_model) or 'none'})",
                                    file=file, key=f"{at}models[{index}].parameters.{key}")
        if entry.model == config.base_model and method.base != "ignored":
            continue
        for key, default in method.per_model.items():
            if default is None and key not in entry.parameters and key not in config.parameters:
                raise StudbookError(f"'{method.name}' needs '{key}' for every model",
                                    file=file, key=f"{at}models[{index}].parameters.{key}")
    for key in config.parameters:
        if key not in method.shared and key not in method.per_model:
            raise StudbookError(f"'{method.name}' has no parameter '{key}' (known: "
                                f"{', '.join([*method.shared, *method.per_model]) or 'none'})",
                                file=file, key=f"{at}parameters.{key}")
    for key, default in method.shared.items():
        if default is None and key not in config.parameters:
            raise StudbookError(f"'{method.name}' needs parameter '{key}'",
                                file=file, key=f"{at}parameters.{key}")
    for index, entry in enumerate(config.models):
        for key, value in entry.parameters.items():
            _check_range(method.name, key, value, file, f"{at}models[{index}].parameters.{key}")
    for key, value in config.parameters.items():
        _check_range(method.name, key, value, file, f"{at}parameters.{key}")
    _check_normalizable(config, method, file, at)
    return config


def _check_slices(config: MergeConfig, method, file: str, at: str) -> None:
    """Per slice: its base among its sources where the method needs one, the number of
    inputs, every required parameter given in some scope, ranges, equal layer counts."""
    for index, piece in enumerate(config.slices):
        where = f"{at}slices[{index}]"
        base = piece.base_model or config.base_model
        models = [s.model for s in piece.sources]
        lengths = {s.layer_range[1] - s.layer_range[0] for s in piece.sources}
        if len(lengths) != 1 or min(lengths) < 1:
            raise StudbookError(f"the sources of a slice span the same positive number of layers, got "
                                f"{[s.layer_range for s in piece.sources]}", file=file, key=f"{where}.sources")
        if method.needs_base and base not in models:
            raise StudbookError(f"'{method.name}' needs its base_model among each slice's sources "
                                f"({base or 'none given'})", file=file, key=f"{where}.sources")
        count = len(models) if method.base == "ignored" else len([m for m in models if m != base])
        if count < method.min_models or (method.max_models and count > method.max_models):
            raise StudbookError(f"'{method.name}' merges {method.min_models} to {method.max_models or 'any'} "
                                f"model(s), got {count}", file=file, key=f"{where}.sources")
        for position, source in enumerate(piece.sources):
            for key, value in source.parameters.items():
                if key not in method.per_model:
                    raise StudbookError(f"'{method.name}' has no per-model parameter '{key}'", file=file,
                                        key=f"{where}.sources[{position}].parameters.{key}")
                _check_range(method.name, key, value, file, f"{where}.sources[{position}].parameters.{key}")
            if source.model == base and method.base != "ignored":
                continue
            for key, default in method.per_model.items():
                if default is None and not any(key in scope for scope in
                                               (source.parameters, piece.parameters, config.parameters)):
                    raise StudbookError(f"'{method.name}' needs '{key}' for every model", file=file,
                                        key=f"{where}.sources[{position}].parameters.{key}")
        for key, value in piece.parameters.items():
            if key not in method.shared and key not in method.per_model:
                raise StudbookError(f"'{method.name}' has no parameter '{key}'", file=file,
                                    key=f"{where}.parameters.{key}")
            _check_range(method.name, key, value, file, f"{where}.parameters.{key}")
        for key, default in method.shared.items():
            if default is None and key not in piece.parameters and key not in config.parameters:
                raise StudbookError(f"'{method.name}' needs parameter '{key}'", file=file,
                                    key=f"{where}.parameters.{key}")
    for key, value in config.parameters.items():
        if key not in method.shared and key not in method.per_model:
            raise StudbookError(f"'{method.name}' has no parameter '{key}'", file=file,
                                key=f"{at}parameters.{key}")
        _check_range(method.name, key, value, file, f"{at}parameters.{key}")


# parameters with a bounded meaning: (low, low included, high, what it is, for which methods)
# (nearswap's `t` is a distance, any positive value)
RANGES = {"density": (0.0, False, 1.0, "the fraction of each task vector kept", None),
          "t": (0.0, True, 1.0, "the point between base (0) and model (1)", {"slerp"})}


def _scalars(value: ParamValue) -> list[Scalar]:
    out = []
    for entry in value if isinstance(value, list) else [value]:
        entry = entry.value if isinstance(entry, FilterValue) else entry
        out.extend(entry if isinstance(entry, list) else [entry])
    return out


def _check_range(method: str, key: str, value: ParamValue, file: str, where: str) -> None:
    import math

    for scalar in _scalars(value):
        if isinstance(scalar, float) and not math.isfinite(scalar):
            raise StudbookError(f"{scalar} is not a value a merge can use", file=file, key=where)
        if key in RANGES and not isinstance(scalar, bool):
            low, inclusive, high, meaning, methods = RANGES[key]
            if methods is not None and method not in methods:
                continue
            if not ((scalar >= low if inclusive else scalar > low) and scalar <= high):
                raise StudbookError(f"{key} {scalar} is outside {'[' if inclusive else '('}{low:g}, "
                                    f"{high:g}]: it is {meaning}", file=file, key=where)


def _check_normalizable(config: MergeConfig, method, file: str, at: str) -> None:
    """A normalizing merge divides by the sum of the weights: a sum of 0 would breed NaN."""
    if "weight" not in method.per_model or "normalize" not in method.shared:
        return
    normalize = config.parameters.get("normalize", method.shared["normalize"])
    if not any(_scalars(normalize)):
        return
    entries = {e.model: e for e in config.models}
    values = [entries[n].parameters.get("weight", config.parameters.get("weight")) if n in entries
              else config.parameters.get("weight") for n in inputs(config, method)]
    probes = {""} | {f.filter for v in values if isinstance(v, list) for f in v
                     if isinstance(f, FilterValue) and f.filter not in (None, "*")}
    from studbook.operators.merge_plan import evaluate

    for probe, t in [(p, t) for p in sorted(probes) for t in (0.0, 1.0)]:  # each filter, none; gradient ends
        resolved = [evaluate(v, probe, t) for v in values if v is not None]
        if any(r is None for r in resolved):
            continue
        total = sum(float(r) for r in resolved)
        if abs(total) < 1e-12:
            raise StudbookError(f"the weights{f' for tensors matching {probe!r}' if probe else ''} sum to 0, "
                                f"and '{method.name}' with normalize divides by their sum (set "
                                "normalize: false, or weights that do not cancel)", file=file, key=f"{at}models")


def inputs(config: MergeConfig, method) -> list[str]:
    """The models a method's `tensors` are, in mergekit's order: the listed models in config
    order, the base_model appended last when not listed (`plan.py`: mergekit averages it in
    for the methods that ignore the base's role); without the base for the other methods."""
    names = [m.model for m in config.models]
    if method.base == "ignored":
        return names + ([config.base_model] if config.base_model and config.base_model not in names else [])
    return [n for n in names if n != config.base_model]


def _header(folder: Path) -> tuple[dict[str, Path], dict[str, tuple[tuple[int, ...], str]]]:
    """tensor -> the file holding it, and tensor -> (shape, dtype), from the headers only.
    A folder holds `model.safetensors`, or shards listed by `model.safetensors.index.json`
    (what `save_pretrained` and mergekit write; mergekit reads the same two)."""
    import json

    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = {name: folder / shard for name, shard in weight_map.items()}
    else:
        single = sorted(folder.glob("*.safetensors"))
        if len(single) != 1:
            raise StudbookError(f"expected model.safetensors or an index of shards, found "
                                f"{len(single)} safetensors file(s)", file=str(folder))
        files = None
    shapes, where = {}, {}
    for file in sorted(set(files.values())) if files else single:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                shapes[name] = (tuple(piece.get_shape()), piece.get_dtype())
                where[name] = file
    if files and set(files) != set(shapes):
        raise StudbookError("the shard index and the shards list different tensors", file=str(index))
    return where, dict(sorted(shapes.items()))


def _read(file: Path, name: str):
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:  # closed at once: unmapped
        return handle.get_tensor(name)


# safetensors dtype names <-> torch, and their sizes in bytes
_ST_DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
              "F64": ("float64", 8)}
_TORCH_TO_ST = {name: (code, size) for code, (name, size) in _ST_DTYPES.items()}


def _torch_dtype(name: str):
    import torch

    return getattr(torch, _ST_DTYPES[name][0] if name in _ST_DTYPES else name)


class SafetensorsWriter:
    """Writes a safetensors file tensor by tensor, in the order of the planned header.

    safetensors' own `save_file` needs every tensor in memory and serialises a full copy;
    a merge knows every output shape and dtype up front (from its inputs' headers), so
    the header is written first and each merged tensor is appended and dropped. The
    file is read back by safetensors itself, which checks the offsets.
    """

    def __init__(self, path: Path, plan: dict[str, tuple[tuple[int, ...], str]]):
        import json
        import math

        self.path, self.order, self.written = Path(path), list(plan), 0
        header, offset = {}, 0
        self.dtypes = {}
        for name, (shape, dtype) in plan.items():
            code, size = _TORCH_TO_ST[dtype] if dtype in _TORCH_TO_ST else (dtype, _ST_DTYPES[dtype][1])
            self.dtypes[name] = _ST_DTYPES[code][0]
            length = math.prod(shape) * size
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + length]}
            offset += length
        header["__metadata__"] = {"format": "pt"}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned
        self.header = raw

    def __enter__(self) -> "SafetensorsWriter":
        self.handle = open(self.path, "wb")
        self.handle.write(len(self.header).to_bytes(8, "little") + self.header)
        return self

    def write(self, name: str, tensor) -> None:
        import torch

        expected = self.order[self.written]
        if name != expected:
            raise RuntimeError(f"tensor '{name}' written out of order (expected '{expected}')")
        tensor = tensor.to(getattr(torch, self.dtypes[name])).contiguous()
        if tensor.numel():  # a byte view of the tensor: no copy
            self.handle.write(tensor.reshape(-1).view(torch.uint8).numpy())
        self.written += 1

    def __exit__(self, kind, value, traceback) -> None:
        self.handle.close()
        if kind is None and self.written != len(self.order):
            raise RuntimeError(f"{self.written} of {len(self.order)} tensors written")


def parse_size(value: str | int | None) -> int | None:
    """mergekit's `parse_kmb`: 20000, "20K", "5M", "5B" -> bytes (mergekit's help says
    parameters; its writer compares bytes)."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().upper()
    scale = {"K": 10**3, "M": 10**6, "B": 10**9}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale != 1 else text) * scale)
    except ValueError:
        raise StudbookError(f"'{value}' is not a size (e.g. 20000, 20K, 5M, 5B)", key="out_shard_size") from None


def shard_layout(plan: dict[str, tuple[tuple[int, ...], str]], max_bytes: int | None) -> list[list[str]]:
    """mergekit's writer rule: tensors in write order fill a shard; one that would make a
    non-empty shard exceed `max_bytes` opens the next."""
    import math

    shards, size = [[]], 0
    for name, (shape, dtype) in plan.items():
        code = _TORCH_TO_ST[dtype][0] if dtype in _TORCH_TO_ST else dtype
        length = math.prod(shape) * _ST_DTYPES[code][1]
        if max_bytes is not None and shards[-1] and size + length > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += length
    return shards


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
        files[name], headers[name] = _header(folder)
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
        loaded = work_dtype or _torch_dtype(headers[model][name][1])
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


def writer_bytes(shape_dtype) -> int:
    import math

    code = _TORCH_TO_ST[shape_dtype[1]][0] if shape_dtype[1] in _TORCH_TO_ST else shape_dtype[1]
    return math.prod(shape_dtype[0]) * _ST_DTYPES[code][1]


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
        tensor = _read(files[model][input_name[model]], input_name[model])
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
