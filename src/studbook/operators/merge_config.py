"""mergekit's configuration format, validated once at the edge.

A config is mergekit's YAML (`merge_method`, `models` or `slices`, `base_model`,
`parameters`, `dtype`, `out_dtype`, `tokenizer_source`), so a recipe written for
`mergekit-yaml` runs here as-is. Parameters are scalars, gradients (lists of numbers,
interpolated over a slice's layers) or mergekit's filter lists
(`[{filter: self_attn, value: 0.3}, {value: 0.5}]`). Everything is checked before any
tensor is read, and an error names the file and the key path; keys studbook does not
execute (`modules`, `tokenizer`, `chat_template`) are refused by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

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
    _check_scope(method, config.parameters, file, f"{at}parameters")
    for key, default in method.shared.items():
        if default is None and key not in config.parameters:
            raise StudbookError(f"'{method.name}' needs parameter '{key}'",
                                file=file, key=f"{at}parameters.{key}")
    for index, entry in enumerate(config.models):
        for key, value in entry.parameters.items():
            _check_range(method.name, key, value, file, f"{at}models[{index}].parameters.{key}")
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
        _check_scope(method, piece.parameters, file, f"{where}.parameters")
        for key, default in method.shared.items():
            if default is None and key not in piece.parameters and key not in config.parameters:
                raise StudbookError(f"'{method.name}' needs parameter '{key}'", file=file,
                                    key=f"{where}.parameters.{key}")
    _check_scope(method, config.parameters, file, f"{at}parameters")


def _check_scope(method, parameters: dict, file: str, where: str) -> None:
    """A scope shared by every model (the top level or a slice's): known names, in range."""
    for key, value in parameters.items():
        if key not in method.shared and key not in method.per_model:
            raise StudbookError(f"'{method.name}' has no parameter '{key}' (known: "
                                f"{', '.join([*method.shared, *method.per_model]) or 'none'})",
                                file=file, key=f"{where}.{key}")
        _check_range(method.name, key, value, file, f"{where}.{key}")


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
