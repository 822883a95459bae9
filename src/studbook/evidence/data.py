"""The embedded corpus: the Python standard library's own source, split by file.

Every machine with Python has this text, so the default ecology needs no download.
Files are assigned to train / mining / held-out by a stable hash of their path (never
by order or a random draw), and to a niche by the first matching glob pattern.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import platform
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studbook.core.atomic import atomic_dir, canonical_json

SPLITS = ("train", "mining", "heldout")


class DataParams(BaseModel):
    """`data:` in params.yaml."""

    model_config = ConfigDict(extra="forbid")

    salt: str = Field(description="mixed into the split hash; changing it re-splits")
    splits: dict[str, float]
    max_file_bytes: int = Field(gt=0, description="larger files are skipped (bytes)")
    niches: dict[str, list[str]] = Field(description="niche -> fnmatch patterns; first match wins")
    default_niche: str = "general"

    @model_validator(mode="after")
    def _check_splits(self) -> "DataParams":
        if set(self.splits) != set(SPLITS):
            raise ValueError(f"splits must name exactly {list(SPLITS)}")
        if abs(sum(self.splits.values()) - 1.0) > 1e-9:
            raise ValueError("split fractions must add up to 1")
        return self


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the stdlib root, POSIX separators
    niche: str
    split: str
    text: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(path: str, salt: str, fractions: dict[str, float]) -> str:
    """Stable split for a file: the first 8 bytes of sha256(salt/path) as a fraction."""
    digest = hashlib.sha256(f"{salt}/{path}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if position < edge:
            return name
    return SPLITS[-1]


def niche_of(path: str, niches: dict[str, list[str]], default: str) -> str:
    for niche, patterns in niches.items():
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
            return niche
    return default


def iter_stdlib(params: DataParams, root: Path | None = None) -> Iterator[SourceFile]:
    root = root or stdlib_root()
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        if rel.startswith(("site-packages/", "dist-packages/")) or "__pycache__" in rel:
            continue
        data = file.read_bytes()
        if len(data) > params.max_file_bytes or not data.strip():
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a few test fixtures are deliberately mis-encoded
        yield SourceFile(
            path=rel,
            niche=niche_of(rel, params.niches, params.default_niche),
            split=split_of(rel, params.salt, params.splits),
            text=text,
        )


def build_corpus(params: DataParams, out_dir: str | Path, root: Path | None = None) -> dict:
    """Write `train.jsonl`, `mining.jsonl`, `heldout.jsonl` and `manifest.json`."""
    files = list(iter_stdlib(params, root))
    content = hashlib.sha256()
    stats: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}
    with atomic_dir(out_dir) as tmp:
        handles = {s: open(tmp / f"{s}.jsonl", "w", encoding="utf-8") for s in SPLITS}
        try:
            for f in files:
                content.update(f.path.encode() + b"\0" + f.text.encode() + b"\0")
                record = {"path": f.path, "niche": f.niche, "text": f.text}
                handles[f.split].write(json.dumps(record, ensure_ascii=False) + "\n")
                entry = stats[f.split].setdefault(f.niche, {"files": 0, "bytes": 0})
                entry["files"] += 1
                entry["bytes"] += len(f.text.encode())
        finally:
            for handle in handles.values():
                handle.close()
        manifest = {
            "source": "python-stdlib",
            "python_version": platform.python_version(),
            "python_implementation": platform.python_implementation(),
            "content_sha256": content.hexdigest(),
            "files": len(files),
            "splits": stats,
        }
        (tmp / "manifest.json").write_text(canonical_json(manifest), encoding="utf-8")
    return manifest


def read_split(corpus_dir: str | Path, split: str) -> list[dict]:
    with open(Path(corpus_dir) / f"{split}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_manifest(corpus_dir: str | Path) -> dict:
    return json.loads((Path(corpus_dir) / "manifest.json").read_text(encoding="utf-8"))
