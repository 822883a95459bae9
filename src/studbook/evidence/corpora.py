"""Corpora from configuration: `corpora:` in params.yaml, corpus name -> source.

A source is a folder of text files picked by globs (code, Markdown, anything textual: each
file one document, its path relative to the folder its id), a JSONL, Parquet or CSV file
(or a folder of them) with a named text field, or a dataset saved with `save_to_disk` —
the last four read through the `datasets` library. The embedded default, `python-stdlib`,
is the folder of the running Python's standard library. Each corpus is written by its
own prepare_data stage to its own folder (`evidence.data` describes the layout), split by
a stable hash of each document's id, with niches by glob over the id or by a field.

Validated once at the edge (`load_corpus`, `load_corpora`); everything found wrong before
a byte is written — a path that does not exist, a glob that matches nothing, a field
that is not there — is a StudbookError naming params.yaml and the key path. Paths are
relative to the folder holding params.yaml (the repository's root).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from studbook.core.atomic import atomic_dir, canonical_json, scratch_dir
from studbook.core.config import load_yaml, validate
from studbook.core.errors import StudbookError
from studbook.evidence.data import SPLITS, niche_of, split_of
from studbook.evidence.sources import folder_documents, order, table_documents

CORPUS_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
SKIPS = ("duplicate", "empty", "excluded", "not_utf8", "too_large")


class _Source(BaseModel):
    """What every corpus has: where it is written, how it splits, its niches."""

    model_config = ConfigDict(extra="forbid")

    out: str | None = Field(default=None, description="output folder (default data/corpora/NAME)")
    salt: str = Field(default="studbook-v1", description="mixed into the split hash; changing it re-splits")
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.8, "mining": 0.1, "heldout": 0.1})
    niches: dict[str, list[str]] = Field(default_factory=dict, description=(
        "niche -> fnmatch patterns over the document id (`*` crosses `/`); first match wins"))
    default_niche: str = "general"
    exclude: list[str] = Field(default_factory=list, description="fnmatch patterns over the id: left out")
    max_document_bytes: int | None = Field(default=None, gt=0, description="larger documents are skipped")

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: dict[str, float]) -> dict[str, float]:
        if set(value) != set(SPLITS):
            raise ValueError(f"splits must name exactly {list(SPLITS)}")
        if any(v < 0 for v in value.values()) or abs(sum(value.values()) - 1.0) > 1e-9:
            raise ValueError("split fractions must be non-negative and add up to 1")
        return value

    @field_validator("out")
    @classmethod
    def _out(cls, value: str | None) -> str | None:
        if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts or not value.strip("./")):
            raise ValueError("out must be a folder inside the repository, e.g. data/corpora/NAME")
        return value


class StdlibSource(_Source):
    """The embedded default: the running Python's standard library (found with sysconfig)."""

    kind: Literal["python-stdlib"]
    globs: list[str] = Field(default_factory=lambda: ["**/*.py"], min_length=1)


class FolderSource(_Source):
    """A folder of text files: each file one document, its relative path its id."""

    kind: Literal["folder"]
    path: str
    globs: list[str] = Field(min_length=1, description="pathlib globs under `path` (`**` for any depth)")


class TableSource(_Source):
    """Rows of a JSONL, Parquet or CSV file (or a folder of them), or of a saved dataset."""

    kind: Literal["jsonl", "parquet", "csv", "saved"]
    path: str
    text_field: str = "text"
    id_field: str | None = Field(default=None, description=(
        "the document id; without it, a hash of the text (so an edited document may change split)"))
    niche_field: str | None = Field(default=None, description="niche from this field's value")
    dataset_split: str | None = Field(default=None, description="which split of a saved DatasetDict")

    @field_validator("niche_field")
    @classmethod
    def _one_niche_rule(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("niches"):
            raise ValueError("give niches (globs over the id) or niche_field, not both")
        return value


Source = Union[StdlibSource, FolderSource, TableSource]
KINDS: dict[str, type[BaseModel]] = {"python-stdlib": StdlibSource, "folder": FolderSource, "jsonl": TableSource,
                                     "parquet": TableSource, "csv": TableSource, "saved": TableSource}


@dataclass(frozen=True)
class Corpus:
    """One validated `corpora.NAME` entry, with the params file it came from."""

    name: str
    spec: Source
    file: str = "params.yaml"

    @property
    def root(self) -> Path:
        return Path(self.file).parent

    @property
    def out(self) -> str:
        return self.spec.out or f"data/corpora/{self.name}"

    def error(self, field: str, message: str) -> StudbookError:
        return StudbookError(message, file=self.file, key=f"corpora.{self.name}.{field}")

    def data_path(self) -> Path | None:
        """The file or folder it reads (None for the standard library)."""
        if isinstance(self.spec, StdlibSource):
            return None
        return Path(os.path.abspath(self.root / self.spec.path))

    def location(self) -> str | None:
        """The data it reads, relative to the repository when inside it (a DVC dependency)."""
        if isinstance(self.spec, StdlibSource):
            return None
        full = self.data_path()
        rel = os.path.relpath(full, os.path.abspath(self.root))
        return str(full) if rel == ".." or rel.startswith(".." + os.sep) else Path(rel).as_posix()


def _section(path: str | Path) -> dict:
    data = load_yaml(path)
    section = data.get("corpora")
    if not isinstance(section, dict) or not section:
        raise StudbookError("expected a mapping of corpus name -> source" if "corpora" in data
                            else "missing section 'corpora'", file=str(path), key="corpora")
    return section


def _validated(name: object, spec: object, file: str) -> Corpus:
    key = f"corpora.{name}"
    if not isinstance(name, str) or not CORPUS_NAME.match(name):
        raise StudbookError(f"'{name}' is not a valid corpus name (lower-case letters, digits, '-', '_')",
                            file=file, key=key)
    if not isinstance(spec, dict):
        raise StudbookError("expected a mapping with a `kind`", file=file, key=key)
    kind = spec.get("kind")
    if kind not in KINDS:
        raise StudbookError(f"unknown source kind '{kind}' (known: {', '.join(KINDS)})" if kind is not None
                            else f"required key is missing (kinds: {', '.join(KINDS)})", file=file, key=f"{key}.kind")
    return Corpus(name, validate(KINDS[kind], spec, file=file, prefix=key), file)


def load_corpus(name: str, path: str | Path = "params.yaml") -> Corpus:
    """One corpus, validated alone: its stage reads (and DVC tracks) only `corpora.NAME`."""
    section = _section(path)
    if name not in section:
        raise StudbookError(f"no corpus named '{name}' (known: {', '.join(map(str, section))})",
                            file=str(path), key="corpora")
    return _validated(name, section[name], str(path))


def load_corpora(path: str | Path = "params.yaml") -> dict[str, Corpus]:
    """Every corpus, validated, with outputs that neither coincide nor nest."""
    corpora = {name: _validated(name, spec, str(path)) for name, spec in _section(path).items()}
    seen: dict[Path, str] = {}
    for name, corpus in corpora.items():
        out = Path(os.path.normpath(corpus.out))
        for other_out, other in seen.items():
            if out == other_out or out in other_out.parents or other_out in out.parents:
                raise corpus.error("out", f"'{corpus.out}' overlaps corpus '{other}''s output")
        seen[out] = name
    return corpora


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def read_documents(corpus: Corpus, cache_dir: Path) -> tuple[list[tuple[str, str, str]], Counter]:
    """(id, niche, text) in id order; what was left out, counted by reason."""
    spec = corpus.spec
    skipped: Counter = Counter()
    if isinstance(spec, StdlibSource):
        rows = folder_documents(corpus, stdlib_root(), skipped)
    else:
        path = corpus.data_path()
        if not path.exists():
            raise corpus.error("path", f"no such file or folder: {path}")
        out = Path(os.path.abspath(corpus.root / corpus.out))
        if out == path or path in out.parents:
            raise corpus.error("path", f"{path} holds the corpus's own output '{corpus.out}'")
        if isinstance(spec, FolderSource):
            if not path.is_dir():
                raise corpus.error("path", f"not a folder: {path}")
            rows = folder_documents(corpus, path, skipped)
        else:
            rows = table_documents(corpus, path, cache_dir, skipped)
    documents: dict[str, tuple[str, str, str]] = {}
    for doc_id, text, niche in rows:
        if doc_id in documents:
            if getattr(spec, "id_field", None) is not None:
                raise corpus.error("id_field", f"id '{doc_id}' is not unique")
            skipped["duplicate"] += 1  # the same text twice: its hash id is the same
            continue
        documents[doc_id] = (doc_id, niche or niche_of(doc_id, spec.niches, spec.default_niche), text)
    if not documents:
        raise StudbookError(f"no documents ({dict(skipped) or 'nothing read'})", file=corpus.file,
                            key=f"corpora.{corpus.name}")
    return [documents[k] for k in sorted(documents, key=order)], skipped


def build_corpus(corpus: Corpus, out_dir: str | Path | None = None) -> dict:
    """Write `train.jsonl`, `mining.jsonl`, `heldout.jsonl` and `manifest.json`; nothing on bad input."""
    out = Path(out_dir) if out_dir is not None else corpus.root / corpus.out
    spec = corpus.spec
    with scratch_dir(out) as cache_dir:  # datasets' cache for this build only, never shared
        documents, skipped = read_documents(corpus, cache_dir)
    content = hashlib.sha256()
    stats: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}
    with atomic_dir(out) as tmp:
        handles = {s: open(tmp / f"{s}.jsonl", "w", encoding="utf-8") for s in SPLITS}
        try:
            for doc_id, niche, text in documents:
                split = split_of(doc_id, spec.salt, spec.splits)
                content.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
                record = {"path": doc_id, "niche": niche, "text": text}
                handles[split].write(json.dumps(record, ensure_ascii=False) + "\n")
                entry = stats[split].setdefault(niche, {"files": 0, "bytes": 0})
                entry["files"] += 1
                entry["bytes"] += len(text.encode())
        finally:
            for handle in handles.values():
                handle.close()
        manifest = {"content_sha256": content.hexdigest(), "files": len(documents), "splits": stats}
        if isinstance(spec, StdlibSource):  # the embedded corpus's manifest, exactly as it was
            manifest.update(source="python-stdlib", python_version=platform.python_version(),
                            python_implementation=platform.python_implementation())
        else:
            manifest.update(name=corpus.name, source=spec.kind, location=corpus.location(),
                            skipped={reason: skipped[reason] for reason in SKIPS})
        (tmp / "manifest.json").write_text(canonical_json(manifest), encoding="utf-8")
    return manifest
