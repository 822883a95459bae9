"""Model artifacts: HF layout, safetensors only, each describing itself.

Beside the weights every artifact carries `studbook.json`: the resolved recipe, the
parents with their sha256, the seed, library versions and the compute spent, so the
next tool (and lineage) reads the facts from the artifact, never from a side database.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from studbook.core.atomic import sha256_file, write_json_atomic
from studbook.core.errors import StudbookError

META_FILE = "studbook.json"
WEIGHTS_FILE = "model.safetensors"
# File endings that can carry pickled code: never loaded, the folder is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


def model_config(spec, tokenizer, family: dict | None = None):
    """The HF config of a model built from a ModelSpec.

    Vocabulary size and special-token ids come from the tokenizer the model will carry. With
    `family` (a teacher's config.json) the model is a smaller member of that family: its
    vocabulary and special ids are the teacher's, and its sizes are the spec's `config`
    (given) or, when the spec gives none, the teacher's with half the layers (derived).
    """
    from transformers import AutoConfig

    try:
        if family is not None and not spec.config:
            return _half_depth(AutoConfig.for_model(family["model_type"], **_own_keys(family)))
        if family is not None:
            ids = {k: family.get(k) for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}
        else:
            eos = tokenizer.eos_token_id
            ids = {"vocab_size": len(tokenizer), "eos_token_id": eos,
                   "bos_token_id": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
                   "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos}
        kwargs = {**spec.config, **ids}
        # each architecture names its context length differently; set the spellings it has
        known = AutoConfig.for_model(spec.architecture).to_dict()
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"):
            if key in known:
                kwargs.setdefault(key, spec.context_length)
        return AutoConfig.for_model(spec.architecture, **kwargs)
    except (ValueError, TypeError) as exc:
        raise StudbookError(str(exc).splitlines()[0][:300], key="config") from None


def _own_keys(config: dict) -> dict:
    """A config.json minus what transformers writes about the file rather than the model."""
    return {k: v for k, v in config.items()
            if k not in ("model_type", "architectures", "transformers_version", "_name_or_path",
                         "dtype", "torch_dtype")}


def _half_depth(config):
    """The derived student: the teacher's config with half its layers (at least one);
    per-layer lists (e.g. Qwen2's layer_types) are cut to match."""
    layers = config.num_hidden_layers
    keep = max(1, layers // 2)
    for key, value in list(config.to_dict().items()):
        if isinstance(value, list) and len(value) == layers and key != "architectures":
            setattr(config, key, value[:keep])
    config.num_hidden_layers = keep
    return config


def build_model(spec, seed: int, tokenizer=None, family: dict | None = None):
    """A freshly initialised HF causal LM from a ModelSpec (seeded, deterministic).

    Without `tokenizer`, the byte-level tokenizer's vocabulary (a scratch founder's).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if tokenizer is None and family is None:
        from studbook.operators.tokenizer import build_tokenizer

        tokenizer = build_tokenizer(spec.context_length)
    config = model_config(spec, tokenizer, family)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def save_model(model, tokenizer, out_dir: str | Path) -> None:
    """Write weights (safetensors), config, generation config and tokenizer into out_dir."""
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


MAX_JSON_BYTES = 64 << 20  # a large vocabulary's tokenizer.json is tens of MB, not more


def _auto_map(value, path: str = "") -> str | None:
    """The key path of the first `auto_map` anywhere in a JSON value (None if none)."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if key == "auto_map":
                return here
            found = _auto_map(item, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _auto_map(item, f"{path}[{index}]")
            if found:
                return found
    return None


def check_safe_folder(path: str | Path) -> None:
    """Refuse folders holding pickle-based files, links, or any JSON asking for remote code
    (an `auto_map` anywhere: config.json, tokenizer_config.json, a nested text_config);
    nothing in the folder is loaded by this check but its small JSON files."""
    path = Path(path)
    if not path.is_dir():
        raise StudbookError("model folder does not exist", file=str(path))
    for file in sorted(path.rglob("*")):
        if file.is_symlink():
            raise StudbookError("a symbolic link: the file a reviewer pinned must be the file read",
                                file=str(file))
        if file.suffix.lower() in PICKLE_SUFFIXES:
            raise StudbookError("pickle-based weights are refused (safetensors only); "
                                "the file was not opened", file=str(file))
        if file.suffix.lower() == ".json":
            if file.stat().st_size > MAX_JSON_BYTES:
                raise StudbookError(f"larger than {MAX_JSON_BYTES >> 20} MiB", file=str(file))
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise StudbookError(f"not valid JSON: {exc}", file=str(file)) from None
            found = _auto_map(data)
            if found:
                raise StudbookError("asks for remote code (auto_map); trust_remote_code stays off",
                                    file=str(file), key=found)
    if not any(path.glob("*.safetensors")):
        raise StudbookError("no safetensors weights in the folder", file=str(path))


def header_parameters(path: str | Path) -> int:
    """Parameters in every tensor of every safetensors file of a folder, read from the
    headers only (safetensors maps the file; no tensor is read)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    count = 1
                    for size in handle.get_slice(name).get_shape():
                        count *= size
                    total += count
        except Exception as exc:  # a truncated file or a bad header
            raise StudbookError(f"unreadable safetensors header: {exc}", file=str(file)) from None
    return total


def load_model(path: str | Path):
    """Load a model folder safely: safetensors only, no remote code, weights checked."""
    from transformers import AutoModelForCausalLM

    check_safe_folder(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=False,
                                                     use_safetensors=True)
    except Exception as exc:  # truncated file, bad header, wrong shapes
        raise StudbookError(f"cannot load weights: {exc}", file=str(path)) from None
    check_finite(model, path)
    return model


def check_finite(model, path: str | Path) -> None:
    """NaN or Inf in any weight: refused, naming the tensor (a diverged or damaged artifact)."""
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise StudbookError(f"tensor '{name}' holds NaN or Inf values", file=str(path), key=name)


def verify_artifact(path: str | Path) -> str:
    """The weights still hash to the sha256 their studbook.json records (a flipped byte, a
    swapped file or a tampered parent is caught here, before anything uses it)."""
    meta = read_meta(path)
    found = weights_sha256(path)
    if found != meta.get("weights_sha256"):
        files = sorted(Path(path).glob("*.safetensors"))
        raise StudbookError(f"weights hash to {found[:12]}… but studbook.json records "
                            f"{str(meta.get('weights_sha256'))[:12]}…: damaged or tampered",
                            file=str(files[0] if len(files) == 1 else path), key="weights_sha256")
    return found


def weights_sha256(path: str | Path) -> str:
    files = sorted(Path(path).glob("*.safetensors"))
    if len(files) == 1:
        return sha256_file(files[0])
    import hashlib

    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("torch", "transformers", "peft", "lm_eval", "dvc", "studbook"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "absent"
    return out


def write_meta(out_dir: str | Path, meta: dict) -> None:
    write_json_atomic(Path(out_dir) / META_FILE, meta)


def read_meta(path: str | Path) -> dict:
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise StudbookError("not a studbook artifact (no studbook.json)", file=str(meta_file))
    return json.loads(meta_file.read_text(encoding="utf-8"))


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_base_of(adapter_dir: str | Path):
    """The base model an adapter was trained on, checked against its pinned sha256."""
    meta = read_meta(adapter_dir)
    base = meta["base"]
    found = weights_sha256(base["path"]) if Path(base["path"]).is_dir() else None
    if found != base["sha256"]:
        raise StudbookError(f"the adapter's base '{base['name']}' has sha256 {str(found)[:12]}…, "
                            f"but the adapter was trained on {base['sha256'][:12]}…",
                            file=str(Path(adapter_dir) / META_FILE), key="base.sha256")
    return load_model(base["path"])


def load_adapter(adapter_dir: str | Path, trainable: bool = False):
    """Base + adapter as a PeftModel (PEFT's own loader; safetensors only)."""
    from peft import PeftModel

    check_safe_folder(adapter_dir)
    base = load_base_of(adapter_dir)
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=trainable)


def load_artifact(path: str | Path):
    """Any population member as a plain causal LM: adapters are merged into their base."""
    if is_adapter(path):
        return load_adapter(path).merge_and_unload()
    return load_model(path)


def save_adapter(peft_model, tokenizer, out_dir: str | Path) -> None:
    """PEFT's layout (adapter_config.json + adapter_model.safetensors), plus the tokenizer."""
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    # PEFT writes target_modules from a Python set, in hash-seed order: canonicalise it so
    # the same adapter gives the same bytes (else DVC sees a change and re-trains children)
    for config_file in Path(out_dir).rglob(ADAPTER_CONFIG):
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if isinstance(config.get("target_modules"), list):
            config["target_modules"] = sorted(config["target_modules"])
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # PEFT also writes a placeholder model card; the real card is cards/NAME.md
    for readme in Path(out_dir).rglob("README.md"):
        readme.unlink()
