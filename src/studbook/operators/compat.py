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


def check_model_spec(spec, file: str, family: dict | None = None) -> None:
    """A model built from `spec` can exist: a causal-LM architecture transformers knows, a
    config its class accepts, a hidden size its attention heads divide, and a model that
    builds (on the meta device: nothing allocated). Errors name the model file and key."""
    import difflib

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    known = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if spec.architecture not in known:
        close = difflib.get_close_matches(spec.architecture, list(known), n=3)
        raise StudbookError(f"'{spec.architecture}' is not a causal-LM architecture transformers "
                            f"{_version()} knows" + (f"; did you mean {', '.join(close)}?" if close else ""),
                            file=file, key="architecture")
    hidden, heads = spec.config.get("hidden_size"), spec.config.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads \
            and "head_dim" not in spec.config:
        raise StudbookError(f"hidden_size {hidden} is not divisible by num_attention_heads {heads}",
                            file=file, key="config.num_attention_heads")
    try:
        model_spec_parameters(spec, family)
    except StudbookError as exc:
        raise StudbookError(exc.detail, file=file, key=exc.key) from None
    except Exception as exc:  # noqa: BLE001 - transformers' own refusal, whatever its type
        message = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise StudbookError(f"transformers cannot build this {spec.architecture}: {message}",
                            file=file, key="config") from None


def _version() -> str:
    import transformers

    return transformers.__version__


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
