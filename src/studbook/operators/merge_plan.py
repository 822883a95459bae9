"""Which output tensor is merged from which input tensors, with which `t`, in which order.

A mergekit config is `models:` (every layer of every model) or `slices:` (per output slice,
sources with a `layer_range` each: frankenmerges that grow or shrink a model). mergekit
normalises both to slices (`plan.py`): `models:` is one slice of all layers whose sources
are the listed models and, if not listed, the base_model appended last. This module does
the same and returns one `Planned` per output tensor, in mergekit's schedule order: the
output tensors sorted by the largest name among their inputs (plain string order, so
`layers.10` comes before `layers.2`; mergekit's `lexicographical_topological_sort` over the
tensors' group labels). That order decides the random stream of the stochastic methods
and the layout of shards, so it is mergekit's rather than the file's.

Parameters resolve as mergekit's `parameter_resolver`: scopes from the highest (the
source's own parameters, then the slice's, then the top level), the first that applies
to the tensor wins, a filter list that matches nothing falls through; a list of numbers is
a gradient interpolated at `t` = the output layer's position in its slice (0 for
embeddings, final norm and head, as mergekit gives them).

The layer structure comes from mergekit's architecture tables (copied below for the
architectures studbook breeds; mergekit is a test-only dependency): layer tensors are
`PREFIX.<i>.…`, the rest are embeddings (merged from the first slice's sources) or the
final weights (from the last slice's sources).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studbook.core.errors import StudbookError


@dataclass(frozen=True)
class Architecture:
    layers: str  # layer tensors are f"{layers}.{i}.{suffix}"
    num_layers_key: str  # config.json key of the layer count
    pre: tuple[str, ...]  # non-layer tensors merged from the first slice
    post: tuple[str, ...]  # non-layer tensors merged from the last slice (absent ones: skipped)


_DECODER = Architecture("model.layers", "num_hidden_layers", ("model.embed_tokens.weight",),
                        ("model.norm.weight", "lm_head.weight"))
# from mergekit/_data/architectures/*.json (0.1.5)
ARCHITECTURES = {
    "llama": _DECODER, "mistral": _DECODER, "qwen2": _DECODER, "qwen3": _DECODER,
    "phi3": Architecture("model.layers", "num_hidden_layers", ("model.embed_tokens.weight",),
                         ("lm_head.weight", "model.norm.weight")),
    "gpt2": Architecture("transformer.h", "n_layer", ("transformer.wte.weight", "transformer.wpe.weight"),
                         ("transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight")),
}


def architecture(model_type: str | None, file: str | None = None) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise StudbookError(f"slices and gradients need the layer layout of the architecture, and "
                            f"'{model_type}' is not one of {', '.join(sorted(ARCHITECTURES))}", file=file)
    return ARCHITECTURES[model_type]


@dataclass(frozen=True)
class Source:
    model: str
    start: int
    stop: int
    parameters: dict


@dataclass(frozen=True)
class Slice:
    sources: tuple[Source, ...]
    base: str | None
    parameters: dict


@dataclass(frozen=True)
class Planned:
    """One output tensor: its inputs (model, tensor name) in source order, its slice, its t."""
    output: str
    inputs: tuple[tuple[str, str], ...]
    slice: int
    t: float

    def order_key(self) -> str:
        return max(name for _, name in self.inputs)


def slices_of(config, layer_counts: dict[str, int]) -> list[Slice]:
    """mergekit's normalisation: `models:` as one slice of every layer, base appended."""
    if config.slices is None:
        sources = [Source(m.model, 0, layer_counts[m.model], dict(m.parameters)) for m in config.models]
        if config.base_model and config.base_model not in [m.model for m in config.models]:
            sources.append(Source(config.base_model, 0, layer_counts[config.base_model], {}))
        return [Slice(tuple(sources), config.base_model, {})]
    return [Slice(tuple(Source(s.model, s.layer_range[0], s.layer_range[1], dict(s.parameters))
                        for s in entry.sources),
                  entry.base_model or config.base_model, dict(entry.parameters))
            for entry in config.slices]


def plan(slices: list[Slice], arch: Architecture | None, names: dict[str, list[str]]) -> list[Planned]:
    """Every output tensor in mergekit's schedule order. `names`: model -> its tensor names.
    Without an architecture (models mode, no gradient) every tensor is merged by name."""
    if arch is None:
        first = slices[0].sources
        return sorted((Planned(n, tuple((s.model, n) for s in first), 0, 0.0) for n in names[first[0].model]),
                      key=Planned.order_key)
    planned: list[Planned] = []

    def layer_suffixes(model: str, layer: int) -> list[str]:
        prefix = f"{arch.layers}.{layer}."
        return [n[len(prefix):] for n in names[model] if n.startswith(prefix)]

    def non_layer(slice_index: int, which: tuple[str, ...]) -> None:
        sources = slices[slice_index].sources
        for name in which:
            if all(name not in names[s.model] for s in sources):
                continue  # an optional weight none has (a tied lm_head): skipped, as mergekit does
            planned.append(Planned(name, tuple((s.model, name) for s in sources), slice_index, 0.0))

    non_layer(0, arch.pre)
    out_layer = 0
    for index, piece in enumerate(slices):
        lengths = {s.stop - s.start for s in piece.sources}
        if len(lengths) != 1:
            raise StudbookError(f"the sources of slices[{index}] span different numbers of layers "
                                f"({sorted(lengths)}): mergekit needs the same for all", key=f"slices[{index}]")
        length = lengths.pop()
        for offset in range(length):
            t = offset / (length - 1) if length > 1 else 1.0
            suffixes = [layer_suffixes(s.model, s.start + offset) for s in piece.sources]
            if not suffixes[0]:
                raise StudbookError(f"'{piece.sources[0].model}' has no layer {piece.sources[0].start + offset}",
                                    key=f"slices[{index}].sources[0].layer_range")
            for position, other in enumerate(suffixes[1:], 1):
                if sorted(other) != sorted(suffixes[0]):
                    raise StudbookError(f"layer {piece.sources[position].start + offset} of "
                                        f"'{piece.sources[position].model}' has other tensors than "
                                        f"'{piece.sources[0].model}''s", key=f"slices[{index}]")
            for suffix in suffixes[0]:
                planned.append(Planned(f"{arch.layers}.{out_layer}.{suffix}",
                                       tuple((s.model, f"{arch.layers}.{s.start + offset}.{suffix}")
                                             for s in piece.sources), index, t))
            out_layer += 1
    non_layer(len(slices) - 1, arch.post)
    # stable: outputs with the same largest input name keep plan order (mergekit: set order)
    return sorted(planned, key=Planned.order_key)


def evaluate(setting: Any, tensor_name: str, t: float) -> Any:
    """mergekit's `evaluate_setting`: a scalar; a gradient (numbers interpolated at t, other
    values picked); or filter entries, the first whose filter is in the tensor's name (None
    when none is: the caller falls through to the next scope)."""
    if setting is None or isinstance(setting, (bool, int, float, str)):
        return setting
    if isinstance(setting, (list, tuple)):
        if not setting:
            return None
        if all(isinstance(v, (bool, int, float, str)) for v in setting):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting):
                return setting[int(t * (len(setting) - 1))]
            scaled = t * (len(setting) - 1)
            low = int(scaled)
            high = min(len(setting) - 1, low + 1)
            frac = scaled - low
            return (1 - frac) * setting[low] + frac * setting[high]
        for entry in setting:
            fil = entry.filter if hasattr(entry, "filter") else entry.get("filter")
            value = entry.value if hasattr(entry, "value") else entry.get("value")
            if fil is None or fil == "*" or (tensor_name and fil in tensor_name):
                return evaluate(value, tensor_name, t)
        return None
    raise StudbookError(f"unexpected parameter value {setting!r}")


def resolve(scopes: list[dict], key: str, tensor_name: str, t: float, default: Any, method: str) -> Any:
    """The first scope whose value applies, else the method's default, else an error."""
    for scope in scopes:
        if key in scope:
            value = evaluate(scope[key], tensor_name, t)
            if value is not None:
                return value
    if default is None:
        raise StudbookError(f"'{method}': no value of '{key}' applies to tensor '{tensor_name}' "
                            "(add an entry without a filter)", key=key)
    return default
