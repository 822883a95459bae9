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
from typing import Any, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from studbook.core.config import validate
from studbook.core.errors import StudbookError

Scalar = Union[float, int, bool]


class FilterValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    filter: str | None = None
    value: Scalar


ParamValue = Union[Scalar, list[FilterValue]]


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    parameters: dict[str, ParamValue] = Field(default_factory=dict)


class MergeConfig(BaseModel):
    """mergekit's configuration format (the subset studbook executes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    merge_method: str
    models: list[ModelEntry] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, ParamValue] = Field(default_factory=dict)
    dtype: Literal["float32", "float16", "bfloat16"] | None = None
    out_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    tokenizer_source: Literal["base"] | None = None


def parse_config(data: Any, file: str, prefix: str = "") -> MergeConfig:
    """Validate a mergekit-format mapping; errors name the file and key."""
    from studbook.operators import merges

    config = validate(MergeConfig, data, file=file, prefix=prefix)
    at = f"{prefix}." if prefix else ""
    method = merges.get(config.merge_method, file=file, key=f"{at}merge_method")
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
            _check_range(key, value, file, f"{at}models[{index}].parameters.{key}")
    for key, value in config.parameters.items():
        _check_range(key, value, file, f"{at}parameters.{key}")
    _check_normalizable(config, method, file, at)
    return config


# parameters with a bounded meaning: (low, low included, high, what it is)
RANGES = {"density": (0.0, False, 1.0, "the fraction of each task vector kept"),
          "t": (0.0, True, 1.0, "the point between base (0) and model (1)")}


def _scalars(value: ParamValue) -> list[Scalar]:
    return [e.value for e in value] if isinstance(value, list) else [value]


def _check_range(key: str, value: ParamValue, file: str, where: str) -> None:
    import math

    for scalar in _scalars(value):
        if isinstance(scalar, float) and not math.isfinite(scalar):
            raise StudbookError(f"{scalar} is not a value a merge can use", file=file, key=where)
        if key in RANGES and not isinstance(scalar, bool):
            low, inclusive, high, meaning = RANGES[key]
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
                     if f.filter not in (None, "*")}
    for probe in sorted(probes):  # a tensor named like each filter, and one matching none
        resolved = [_resolve(v, probe) for v in values if v is not None]
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


def _resolve(value: ParamValue, tensor_name: str) -> Scalar | None:
    """A scalar, or the first filter entry whose filter occurs in the tensor's name (None
    when none does: mergekit then falls through to the next scope)."""
    if not isinstance(value, list):
        return value
    for entry in value:
        if entry.filter in (None, "*") or entry.filter in tensor_name:
            return entry.value
    return None


_UNSET = object()


def lookup(scopes: list[dict], key: str, tensor_name: str, default: Any, method: str) -> Scalar:
    """mergekit's precedence (`parameter_resolver.py`): the first scope whose value applies to
    the tensor, else the method's default, else an error naming the tensor."""
    for scope in scopes:
        if key in scope:
            value = _resolve(scope[key], tensor_name)
            if value is not None:
                return value
    if default is None:
        raise StudbookError(f"'{method}': no value of '{key}' applies to tensor '{tensor_name}' "
                            "(add an entry without a filter)", key=key)
    return default


def _header(folder: Path) -> tuple[Path, dict[str, tuple[tuple[int, ...], str]]]:
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        raise StudbookError(f"expected one safetensors file, found {len(files)}", file=str(folder))
    with safe_open(str(files[0]), framework="pt") as handle:
        shapes = {name: (tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                  for name in handle.keys()}
    return files[0], shapes


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


def run_merge(config: MergeConfig, resolve: Callable[[str], Path], out_dir: str | Path,
              seed: int = 0, on_tensor: Callable[[int, int, str], None] | None = None) -> dict:
    """Merge into `out_dir` (weights, config, tokenizer); `resolve` maps a model name to a folder."""
    import torch
    from studbook.operators import merges

    method = merges.get(config.merge_method)
    out_dir = Path(out_dir)
    base_name = config.base_model
    merged_in = inputs(config, method)  # the `tensors` a method receives, in mergekit's order
    role_base = base_name if method.base != "ignored" else None
    order = ([role_base] if role_base else []) + merged_in
    files, headers = {}, {}
    for name in order:
        files[name], headers[name] = _header(resolve(name))
    reference = base_name if base_name in headers else order[0]  # mergekit's config donor
    for name in order:
        check_same_tensors(reference, headers[reference], name, headers[name])
    listed = {m.model: m.parameters for m in config.models}
    # one seed per merge, as mergekit's `random_seed` (transformers' set_seed): the random
    # methods draw from torch's global generator, tensor after tensor in the order below
    torch.manual_seed(seed)
    out_dtype = getattr(torch, config.out_dtype) if config.out_dtype else None
    work_dtype = getattr(torch, config.dtype) if config.dtype else None

    def written(shape_dtype) -> str:
        if out_dtype is not None:
            return config.out_dtype
        loaded = work_dtype or _torch_dtype(shape_dtype[1])
        return str(method.output_dtype(loaded)).removeprefix("torch.")
    tensor_names = list(headers[reference])
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = SafetensorsWriter(out_dir / "model.safetensors", {
        name: (headers[reference][name][0], written(headers[reference][name])) for name in tensor_names})
    with writer:
        for index, tensor_name in enumerate(tensor_names):
            def load(model: str):
                tensor = _read(files[model], tensor_name)
                return tensor.to(work_dtype) if work_dtype else tensor
            base = load(role_base) if role_base else None
            tensors = [load(name) for name in merged_in]
            per_model = [{key: lookup([listed.get(name, {}), config.parameters], key, tensor_name, default,
                                      method.name)
                          for key, default in method.per_model.items()} for name in merged_in]
            shared = {key: lookup([config.parameters], key, tensor_name, default, method.name)
                      for key, default in method.shared.items()}
            merged = method.merge(base, tensors, per_model, shared)
            writer.write(tensor_name, merged.to(out_dtype) if out_dtype else merged)
            del base, tensors, merged
            if on_tensor:
                on_tensor(index + 1, len(tensor_names), tensor_name)
    source = resolve(reference)
    for extra in ("config.json", "generation_config.json", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json"):
        if (source / extra).is_file():
            shutil.copy2(source / extra, out_dir / extra)
    if out_dtype is not None and (out_dir / "config.json").is_file():
        import json

        cfg = json.loads((out_dir / "config.json").read_text())
        for key in ("torch_dtype", "dtype"):
            if key in cfg:
                cfg[key] = config.out_dtype or config.dtype
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return {"merge_method": method.name, "tensors": len(tensor_names),
            "models": len([n for n in merged_in if n != base_name]), "base_model": base_name,
            "deterministic": method.deterministic}


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
                    on_tensor=None) -> dict:
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
        return run_merge(config, resolve, tmp, seed=seed, on_tensor=on_tensor)
