"""import: a founder from an existing model folder (how a team starts from its own model).

Safetensors only (a folder with pickle-based files is refused without opening them),
no remote code (`auto_map` is refused), pinned by the sha256 of its weights: if the
source changes, the breed stage says so instead of importing something else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from studbook.operators.methods import register

COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model",
          "added_tokens.json", "chat_template.jinja", "model.safetensors.index.json")


class ImportParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(description="a local HF model folder")
    sha256: str = Field(description="sha256 of its safetensors weights, pinned at propose time")


def check_source(ctx, file: str) -> None:
    import json

    from studbook.operators.artifacts import check_safe_folder, weights_sha256
    from studbook.core.errors import StudbookError

    source = Path(ctx.params.source)
    if not (source / "config.json").is_file():
        # the source is pinned by content, not by path: a clone elsewhere restores the bred
        # artifact from the DVC cache or remote (`dvc pull`), or stops here, before compute
        raise StudbookError(f"the imported source {source} is not on this machine; `dvc pull` the "
                            f"generation's artifact, or put a copy with sha256 {ctx.params.sha256[:12]}… "
                            "there", file=file, key="parameters.source")
    check_safe_folder(source)
    found = weights_sha256(source)
    if found != ctx.params.sha256:
        raise StudbookError(f"the source's weights changed: sha256 {found[:12]}… but the recipe pins "
                            f"{ctx.params.sha256[:12]}…", file=file, key="parameters.sha256")
    model_type = json.loads((source / "config.json").read_text()).get("model_type")
    compat = ctx.recipe.contract.compatibility
    if model_type not in compat.architectures:
        raise StudbookError(f"the source is a {model_type}; the contract accepts "
                            f"{', '.join(compat.architectures)}", file=file, key="parameters.source")
    check_bounds(source, compat)


def check_bounds(source: Path, compat) -> None:
    """An imported folder fits the contract before anything is copied or loaded: its size,
    its parameters (every tensor of every shard, from the headers) and its vocabulary."""
    import json

    from studbook.core.errors import StudbookError
    from studbook.operators.artifacts import header_parameters

    where = "contract.compatibility"
    size = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
    if size > compat.byte_budget:
        raise StudbookError(f"the folder {source} holds {size:,} bytes; the contract allows "
                            f"{compat.byte_budget:,} (max_bytes)", file=str(source), key=f"{where}.max_bytes")
    weights = sorted(source.glob("*.safetensors"))
    parameters = header_parameters(source)
    if parameters > compat.max_parameters:
        raise StudbookError(f"{parameters:,} parameters in its safetensors headers (all tensors, "
                            f"{len(weights)} file(s)); the contract allows {compat.max_parameters:,}",
                            file=str(weights[0] if len(weights) == 1 else source),
                            key=f"{where}.max_parameters")
    tokenizer_file = source / "tokenizer.json"
    if tokenizer_file.is_file():
        from tokenizers import Tokenizer

        entries = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size(with_added_tokens=True)
        vocab_size = json.loads((source / "config.json").read_text()).get("vocab_size")
        if entries > compat.max_vocabulary:
            raise StudbookError(f"{entries:,} tokenizer entries; the contract allows "
                                f"{compat.max_vocabulary:,}", file=str(tokenizer_file),
                                key=f"{where}.max_vocabulary")
        if isinstance(vocab_size, int) and entries > vocab_size:
            raise StudbookError(f"{entries:,} tokenizer entries but the model embeds {vocab_size:,}: "
                                "ids past its embedding cannot be scored", file=str(tokenizer_file),
                                key="vocab_size")


@register("import", min_parents=0, max_parents=0, base_model_relation=None, relation="import",
          parameters=ImportParameters, check=check_source,
          description="found a generation on an existing local model (safetensors only)")
def breed_import(ctx) -> dict:
    from studbook.operators.artifacts import load_model, parameter_count

    source = Path(ctx.params.source)
    for file in sorted(source.glob("*.safetensors")):
        shutil.copy2(file, ctx.out_dir / file.name)
    for name in COPIED:
        if (source / name).is_file():
            shutil.copy2(source / name, ctx.out_dir / name)
    model = load_model(ctx.out_dir)  # proves it loads as a causal LM, without remote code
    return {"parameters": parameter_count(model), "source_sha256": ctx.params.sha256}
