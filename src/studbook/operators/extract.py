"""LoRA extraction: a full-weight child and its parent as a PEFT LoRA adapter on the parent.

The maths and the file layout are mergekit's `mergekit-extract-lora` (0.1.5,
`mergekit/scripts/extract_lora.py`; docs/design/mergekit_parity.md section 5), so a
population can keep a descendant as a small delta on its parent:

- each `nn.Linear` (and, with `embed_lora`, each embedding) is decomposed: the delta
  `child - parent` in the checkpoint's dtype (bf16 rounding included), a float32 SVD,
  rank `min(max_rank, #singular values)`, cut further to the singular values above the
  *absolute* threshold `sv_epsilon`; with `distribute_scale` A = √S·Vh and B = U·√S,
  else A = S·Vh and B = U; both cast back to the delta's dtype. `lora_alpha` = r for
  every module, so PEFT's scaling is 1 and `W_parent + B @ A ≈ W_child`;
- embeddings (unless `embed_lora`), every weight of another module type (norms, GPT-2's
  `Conv1D`, convolutions) and the names in `modules_to_save` are saved at full rank from
  the child, as PEFT `modules_to_save` (skipped instead with `skip_undecomposable`); a
  tied `lm_head` is saved from the embedding it is tied to;
- `adapter_model.safetensors` holds `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`
  (`lora_embedding_A` / `lora_embedding_B` for embeddings) and `base_model.model.<weight>` for
  the full-rank modules; `adapter_config.json` is mergekit's (`r` = the largest rank
  extracted, `rank_pattern`/`alpha_pattern` for the modules below it), `target_modules` sorted.

Where studbook departs from mergekit (so that PEFT loads and merges every adapter it writes):

- a decomposed module whose bias differs between child and parent is saved at full rank
  (its full name goes into `modules_to_save`, and the facts list it): mergekit writes the
  bias delta as `lora_B.bias` without `lora_bias`, which PEFT drops with a warning;
  a bias that did not change is not written at all (mergekit writes a zero `lora_B.bias`);
- a module whose threshold leaves rank 0 is left out (mergekit writes empty factors that
  PEFT cannot load); an extraction that decomposes nothing is refused (mergekit fails on
  `max()` of no ranks), and so is a child tensor that no module owns and that differs from
  the parent (mergekit drops it silently); `nn.Conv1d`/`nn.Conv2d` weights are saved at
  full rank (mergekit would SVD their 3-D/4-D weights batch-wise into factors PEFT cannot
  load); a decomposed weight tied to a module that is not saved at full rank (embeddings
  with `embed_lora` and `tie_word_embeddings`) is refused: PEFT 0.21 either runs such an
  adapter wrong (the tied module without the delta) or merges it wrong (the delta once per
  tied module, twice in all) — mergekit writes it; no README.md, and the tokenizer (the
  child's) is copied.

Streaming: the models are never built; tensors are read one at a time from the
safetensors files, one module's delta and SVD live at a time, only the (small) factors
are kept, and the adapter file is written header first, full-rank tensors read as they
are written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from studbook.core.errors import StudbookError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."


@dataclass
class Entry:
    """One module of the child: decomposed (`lora`) or saved at full rank (`full`)."""

    module: str
    action: str  # "lora" or "full"
    weight: str  # the weight's name in the checkpoint layout (module + ".weight")
    sources: dict[str, str] = field(default_factory=dict)  # output-side name -> child tensor to read
    embedding: bool = False  # decomposed as PEFT's lora_embedding_A/B (transposed delta)
    reason: str = ""  # why full rank: "embedding", "modules_to_save", "undecomposable", "bias"
    module_type: str = ""


@dataclass
class Plan:
    entries: list[Entry]
    modules_to_save: list[str]  # the config's list, in mergekit's order
    skipped: list[str]  # modules left out by the user's choice (exclude, include, skip_undecomposable)
    child_header: dict
    parent_header: dict
    child_files: dict
    parent_files: dict
    aliases: dict[str, list[str]]  # tensor name -> names of the same (tied) parameter
    base_vocab: int
    child_vocab: int


def _regexes(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _meta_model(folder: Path):
    """The model's module tree on the meta device (no weight allocated), as mergekit's
    `_make_dummy_model`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - transformers' refusal, whatever its type
        raise StudbookError(f"cannot build the model from its config: {' '.join(str(exc).split())[:300]}",
                            file=str(folder / "config.json")) from None


def _find(name: str, header: dict, aliases: dict[str, list[str]]) -> str | None:
    """The checkpoint's name for tensor `name`: itself, or a parameter tied to it."""
    if name in header:
        return name
    return next((alias for alias in aliases.get(name, []) if alias in header), None)


def plan_extraction(child_folder, parent_folder, max_rank: int = 128, embed_lora: bool = False,
                    modules_to_save: Iterable[str] = (), include=None, exclude=None,
                    skip_undecomposable: bool = False) -> Plan:
    """What is decomposed and what is saved at full rank, from the configs and the
    safetensors headers (mergekit's `plan_extraction`); no weight is read."""
    from torch import nn

    from studbook.operators.safetensors_io import read_header

    child_folder, parent_folder = Path(child_folder), Path(parent_folder)
    if max_rank < 1:
        raise StudbookError(f"max_rank must be at least 1, got {max_rank}", key="max_rank")
    include, exclude = _regexes(include), _regexes(exclude)
    for key, patterns in (("include", include), ("exclude", exclude)):
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise StudbookError(f"not a regular expression: {exc}", key=f"{key}[{index}]") from None
    child_files, child_header = read_header(child_folder)
    parent_files, parent_header = read_header(parent_folder)
    model = _meta_model(child_folder)
    base = _meta_model(parent_folder)
    embed_in, embed_out = model.get_input_embeddings(), model.get_output_embeddings()
    child_vocab = embed_in.weight.shape[0]
    base_vocab = base.get_input_embeddings().weight.shape[0]
    del base
    if child_vocab != base_vocab:
        embed_lora = False  # mergekit: a vocabulary mismatch forces embeddings into modules_to_save

    groups: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append(name)
    aliases = {name: [n for n in names if n != name] for names in groups.values() for name in names
               if len(names) > 1}

    def excluded(name: str) -> bool:
        return any(re.search(r, name) for r in exclude)

    def wanted(name: str) -> bool:
        if include and not any(re.search(r, name) for r in include):
            return False
        return not excluded(name)

    to_save = list(modules_to_save)
    entries, skipped = [], []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not name or not isinstance(weight, nn.Parameter):
            continue
        key = name.split(".")[-1]
        is_embedding = module is embed_in or module is embed_out or isinstance(module, nn.Embedding)
        if not embed_lora and is_embedding and not excluded(name) and key not in to_save:
            to_save.append(key)
        bias = getattr(module, "bias", None)
        tensors = {f"{name}.weight": f"{name}.weight"}
        if isinstance(bias, nn.Parameter):
            tensors[f"{name}.bias"] = f"{name}.bias"
        found = {out: _find(source, child_header, aliases) for out, source in tensors.items()}
        if found[f"{name}.weight"] is None:
            continue  # not in the checkpoint (mergekit: an optional weight, skipped)
        sources = {out: source for out, source in found.items() if source is not None}
        if name in to_save or key in to_save:
            reason = "embedding" if is_embedding and not embed_lora else "modules_to_save"
            entries.append(Entry(name, "full", f"{name}.weight", sources, reason=reason))
        elif not wanted(name):
            skipped.append(name)
        elif isinstance(module, (nn.Linear, nn.Embedding)) and weight.dim() == 2:
            entries.append(Entry(name, "lora", f"{name}.weight", sources,
                                 embedding=isinstance(module, nn.Embedding)))
        elif skip_undecomposable:
            skipped.append(name)
        else:
            if key not in to_save:
                to_save.append(key)
            entries.append(Entry(name, "full", f"{name}.weight", sources, reason="undecomposable",
                                 module_type=type(module).__name__))
    whole = {entry.weight for entry in entries if entry.action == "full"}
    for entry in entries:
        if entry.action != "lora":
            continue
        # a weight shared with a module that does not keep its own full copy: PEFT 0.21 runs the
        # other module without the delta, or (both decomposed) merges the delta in twice
        tied = [alias for alias in aliases.get(entry.weight, []) if alias not in whole]
        if tied:
            raise StudbookError(f"'{entry.weight}' is tied to '{tied[0]}': PEFT cannot both run and merge "
                                "a LoRA on a tied weight unless every other module holding it is saved at "
                                "full rank; keep the embeddings at full rank (embed_lora: false)",
                                key="embed_lora" if embed_lora else "modules_to_save")
        for out, source in entry.sources.items():
            theirs = _find(out, parent_header, aliases)
            if theirs is None:
                raise StudbookError(f"the parent has no tensor '{out}' to take the child's delta from",
                                    file=str(parent_folder), key=out)
            if parent_header[theirs][0] != child_header[source][0]:
                raise StudbookError(f"'{out}' is {list(child_header[source][0])} in the child and "
                                    f"{list(parent_header[theirs][0])} in the parent", key=out)
    return Plan(entries, to_save, skipped, child_header, parent_header, child_files, parent_files,
                aliases, base_vocab, child_vocab)


def decompose(delta, max_rank: int, sv_epsilon: float = 0.0, distribute_scale: bool = True,
              transpose: bool = False):
    """mergekit's `TaskVectorDecompositionTask.execute`: (A, B, singular values) with
    A [r, in] and B [out, r] in the delta's dtype, so that B @ A ≈ delta (or its transpose,
    for an embedding)."""
    import torch

    if transpose:
        delta = delta.T
    out_dtype = delta.dtype
    u, s, vh = torch.linalg.svd(delta.to(dtype=torch.float32), full_matrices=False)
    rank = min(max_rank, s.shape[0])
    if sv_epsilon > 0:
        rank = min((s > sv_epsilon).sum().item(), rank)
    if distribute_scale:
        sqrt_s = torch.diag(torch.sqrt(s[:rank]))
        scale_a, scale_b = sqrt_s, sqrt_s
    else:
        scale_a, scale_b = torch.diag(s[:rank]), torch.eye(rank)
    weight_a = scale_a @ vh[:rank]
    weight_b = u[:, :rank] @ scale_b
    return weight_a.to(dtype=out_dtype), weight_b.to(dtype=out_dtype), s


def _read(files: dict, name: str):
    from studbook.operators.safetensors_io import read_tensor as read

    return read(files[name], name)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def _figure(value: float) -> float:
    return float(f"{value:.6g}")


def extract_lora(child_folder, parent_folder, out_dir, max_rank: int = 128, sv_epsilon: float = 0.0,
                 distribute_scale: bool = True, embed_lora: bool = False,
                 modules_to_save: Iterable[str] = (), include=None, exclude=None,
                 skip_undecomposable: bool = False, atomic: bool = True) -> dict:
    """Write the PEFT LoRA adapter that takes `parent_folder` to (approximately, at a rank
    below full) `child_folder` into `out_dir`; returns the facts.

    With `atomic` the folder appears only when complete (a caller that already writes into
    a scratch folder passes False).
    """
    import torch

    from studbook.core.atomic import atomic_dir, canonical_json
    from studbook.operators.artifacts import check_safe_folder
    from studbook.operators.safetensors_io import SafetensorsWriter

    child_folder, parent_folder, out_dir = Path(child_folder), Path(parent_folder), Path(out_dir)
    if sv_epsilon < 0:
        raise StudbookError(f"sv_epsilon must be at least 0, got {sv_epsilon}", key="sv_epsilon")
    for folder in (child_folder, parent_folder):
        check_safe_folder(folder)
    plan = plan_extraction(child_folder, parent_folder, max_rank, embed_lora, modules_to_save,
                           include, exclude, skip_undecomposable)
    child_aliases = plan.aliases

    def parent_name(name: str) -> str:
        return _find(name, plan.parent_header, child_aliases)

    # biases: a decomposed module whose bias moved is kept at full rank (design decision (b))
    to_save = list(plan.modules_to_save)
    bias_modules = []
    for entry in plan.entries:
        bias = f"{entry.module}.bias"
        if entry.action == "lora" and bias in entry.sources and not torch.equal(
                _read(plan.child_files, entry.sources[bias]), _read(plan.parent_files, parent_name(bias))):
            entry.action, entry.reason = "full", "bias"
            bias_modules.append(entry.module)
            to_save.append(entry.module)
    used = {source for entry in plan.entries for source in entry.sources.values()}

    # a child tensor the adapter does not carry must equal the parent's, unless the user chose to drop it
    chosen = set(plan.skipped)
    dropped, unowned = [], []
    for name in plan.child_header:
        if name in used:
            continue
        theirs = parent_name(name)
        if theirs is not None and torch.equal(_read(plan.child_files, name), _read(plan.parent_files, theirs)):
            continue
        owner = name.rsplit(".", 1)[0]
        (dropped if owner in chosen else unowned).append(name)
    if unowned:
        raise StudbookError(f"{len(unowned)} tensor(s) of the child differ from the parent but belong "
                            f"to no module the adapter can carry, e.g. '{unowned[0]}'",
                            file=str(child_folder), key=unowned[0])

    # decompose, one module at a time: only the factors are kept
    factors: dict = {}  # output name -> A or B
    ranks: dict[str, int] = {}
    total_energy = discarded_energy = 0.0
    worst = 0.0
    below_epsilon = []
    for entry in plan.entries:
        if entry.action != "lora":
            continue
        child = _read(plan.child_files, entry.sources[entry.weight])
        parent = _read(plan.parent_files, parent_name(entry.weight))
        a, b, s = decompose(child - parent, max_rank, sv_epsilon, distribute_scale, entry.embedding)
        del child, parent
        rank = a.shape[0]
        energy = s.double() ** 2
        total, lost = float(energy.sum()), float(energy[rank:].sum())
        total_energy += total
        discarded_energy += lost
        worst = max(worst, lost / total if total > 0 else 0.0)
        if rank == 0:  # nothing above the threshold: PEFT cannot load a rank-0 module
            below_epsilon.append(entry.module)
            continue
        kind, suffix = ("lora_embedding", "") if entry.embedding else ("lora", ".weight")
        factors[f"{PREFIX}{entry.module}.{kind}_A{suffix}"] = a
        factors[f"{PREFIX}{entry.module}.{kind}_B{suffix}"] = b
        ranks[entry.module] = rank
    if not ranks:
        kinds = sorted({e.module_type for e in plan.entries if e.reason == "undecomposable"})
        raise StudbookError("nothing to decompose: every module is saved at full rank, left out, or "
                            "below sv_epsilon (an adapter would be the whole model)"
                            + (f"; not decomposable: {', '.join(kinds)}" if kinds else ""),
                            key="sv_epsilon" if below_epsilon else "include" if include else None)

    full = {}  # output tensor -> child tensor, for the full-rank modules
    for entry in plan.entries:
        if entry.action == "full":
            for out, source in entry.sources.items():
                full[f"{PREFIX}{out}"] = source
    layout = {name: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in factors.items()}
    layout.update({name: plan.child_header[source] for name, source in full.items()})
    layout = dict(sorted(layout.items()))

    rank = max(ranks.values())
    smaller = {module: r for module, r in ranks.items() if r != rank}
    config = {
        "base_model_name_or_path": str(parent_folder), "peft_type": "LORA", "use_rslora": False,
        "target_modules": sorted({module.split(".")[-1] for module in ranks}),
        "modules_to_save": to_save, "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank,
        "rank_pattern": smaller, "alpha_pattern": dict(smaller), "lora_dropout": 0.0,
        "fan_in_fan_out": False, "inference_mode": True,
    }

    def write(folder: Path) -> None:
        from studbook.operators.tokenizer import load_tokenizer

        with SafetensorsWriter(folder / ADAPTER_WEIGHTS, layout) as writer:
            for name in layout:
                writer.write(name, factors[name] if name in factors else _read(plan.child_files, full[name]))
        (folder / ADAPTER_CONFIG).write_text(canonical_json(config), encoding="utf-8")
        load_tokenizer(child_folder).save_pretrained(str(folder))

    if atomic:
        with atomic_dir(out_dir) as tmp:
            write(tmp)
    else:
        out_dir.mkdir(parents=True, exist_ok=True)
        write(out_dir)

    import math

    adapter_bytes = (out_dir / ADAPTER_WEIGHTS).stat().st_size
    full_bytes = _folder_bytes(child_folder)
    parameters = sum(math.prod(shape) for shape, _ in layout.values())
    full_rank = [e.module for e in plan.entries if e.action == "full"]
    facts = {
        "rank": rank, "max_rank": max_rank, "sv_epsilon": sv_epsilon,
        "distribute_scale": distribute_scale, "embed_lora": embed_lora,
        "decomposed_modules": len(ranks), "smallest_rank": min(ranks.values()),
        "full_rank_modules": len(full_rank), "modules_to_save": to_save,
        "full_rank_for_bias": bias_modules, "below_sv_epsilon": below_epsilon,
        "dropped": sorted(dropped), "adapter_parameters": parameters,
        "adapter_bytes": adapter_bytes, "full_bytes": full_bytes,
        "size_ratio": _figure(adapter_bytes / full_bytes),
        # sum of discarded S² over the sum of S², over every decomposed module: the squared
        # relative Frobenius error of the decomposed deltas (before casting the factors)
        "discarded_energy": _figure(discarded_energy / total_energy if total_energy > 0 else 0.0),
        "max_module_discarded_energy": _figure(worst),
    }
    return facts
