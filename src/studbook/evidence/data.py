"""A corpus on disk, as training, benchmarks and cards read it.

A corpus folder holds `train.jsonl`, `mining.jsonl`, `heldout.jsonl` (one document a
line: `{"path": ID, "niche": ..., "text": ...}`) and `manifest.json`; it is written by
the prepare_data stage from `corpora.NAME` in params.yaml (`evidence.corpora`). The
document id is stored under `path` (a file's relative path, or a table row's id) so the
embedded stdlib corpus stays byte-identical to what the population was bred on.
Documents go to train / mining / held-out by a stable hash of their id (never by order
or a random draw), and to a niche by the first matching glob pattern or a field's value.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

SPLITS = ("train", "mining", "heldout")


def split_of(path: str, salt: str, fractions: dict[str, float]) -> str:
    """Stable split for a document: the first 8 bytes of sha256(salt/id) as a fraction."""
    digest = hashlib.sha256(f"{salt}/{path}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name in SPLITS:
        edge += fractions[name]
        if position < edge:
            return name
    return SPLITS[-1]


def niche_of(path: str, niches: dict[str, list[str]], default: str) -> str:
    """First niche with a matching fnmatch pattern (`*` matches across `/`), else `default`."""
    for niche, patterns in niches.items():
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
            return niche
    return default


def read_split(corpus_dir: str | Path, split: str) -> list[dict]:
    """The split's documents: `text`, `niche`, and the id as both `path` and `id`."""
    with open(Path(corpus_dir) / f"{split}.jsonl", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    for record in records:
        record.setdefault("id", record["path"])
    return records


def read_manifest(corpus_dir: str | Path) -> dict:
    return json.loads((Path(corpus_dir) / "manifest.json").read_text(encoding="utf-8"))


def describe_corpus(manifest: dict) -> dict:
    """What a card names: the corpus's name, source kind, location, content hash, size.

    The embedded stdlib corpus keeps its original manifest (no name or location: its
    place is the running Python's own library, recorded by version).
    """
    if manifest["source"] == "python-stdlib":
        where = f"{manifest['python_implementation']} {manifest['python_version']} standard library"
        return {"name": "stdlib", "source": "python-stdlib", "location": where,
                "content_sha256": manifest["content_sha256"], "files": manifest["files"]}
    return {key: manifest[key] for key in ("name", "source", "location", "content_sha256", "files")}
