"""The compatibility contract, checked before any compute.

Architecture, tokenizer identity (by fingerprint), parameter budget and the method's
own requirements (tensor shapes for merges, adapter bases by sha256 and LoRA ranks for
adapter merges) are read from the parents' artifacts: headers and small JSON files,
never the weights. Each mismatch is one error naming both parents and the differing key.
"""

from __future__ import annotations

from studbook.core.errors import StudbookError


def model_spec_parameters(spec, family: dict | None = None) -> int:
    """Parameters of a model built from a ModelSpec (in `family`, a teacher's config, if
    given), counted on the meta device: no weight is allocated."""
    import torch

    from studbook.operators.artifacts import build_model

    with torch.device("meta"):
        model = build_model(spec, seed=0, family=family)
    return sum(p.numel() for p in model.parameters())


def tokenizer_of(parent) -> str:
    return parent.meta["tokenizer_sha256"]


def check_compatibility(ctx, method, file: str) -> dict:
    """Raise on the first mismatch; return the facts checked (for breed.json)."""
    recipe, parents = ctx.recipe, ctx.parents
    compat = recipe.contract.compatibility
    from studbook.operators.artifacts import verify_artifact

    for index, parent in enumerate(parents):
        parent.meta  # noqa: B018 - raises a clear error if the parent is not bred
        verify_artifact(parent.path)  # a parent whose weights no longer match its record
        model_type = parent.config.get("model_type")
        if model_type not in compat.architectures:
            raise StudbookError(f"parent '{parent.name}' is a {model_type}; the contract accepts "
                                f"{', '.join(compat.architectures)}", file=file,
                                key=f"parents[{index}]")
        if compat.tokenizer_sha256 and tokenizer_of(parent) != compat.tokenizer_sha256:
            raise StudbookError(f"parent '{parent.name}' has tokenizer {tokenizer_of(parent)[:12]}…, "
                                f"the contract requires {compat.tokenizer_sha256[:12]}…",
                                file=file, key=f"parents[{index}]")
    first = parents[0] if parents else None
    for index, other in enumerate(parents[1:], start=1):
        for key in ("model_type", "vocab_size"):
            if first.config.get(key) != other.config.get(key):
                raise StudbookError(f"parents '{first.name}' and '{other.name}' differ in {key}: "
                                    f"{first.config.get(key)} vs {other.config.get(key)}",
                                    file=file, key=f"parents[{index}]")
        if tokenizer_of(first) != tokenizer_of(other):
            raise StudbookError(f"parents '{first.name}' and '{other.name}' differ in tokenizer: "
                                f"{tokenizer_of(first)[:12]}… vs {tokenizer_of(other)[:12]}…",
                                file=file, key=f"parents[{index}]")
    if method.uses_model_spec:  # a founder from scratch, or a student in its teacher's family
        parameters = model_spec_parameters(recipe.model, first.config if first else None)
    elif first is not None:
        parameters = int(first.meta.get("total_parameters", first.meta["parameters"]))
    else:
        parameters = 0
    if parameters > compat.max_parameters:
        raise StudbookError(f"the child would have {parameters:,} parameters; the contract allows "
                            f"{compat.max_parameters:,}", file=file,
                            key="contract.compatibility.max_parameters")
    if method.check is not None:
        method.check(ctx, file)
    return {"parameters_estimate": parameters,
            "tokenizer_sha256": tokenizer_of(first) if first else None}
