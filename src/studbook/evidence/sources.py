"""Reading a corpus's documents: files under a folder, or rows of a table through `datasets`.

Each reader yields `(id, text, niche or None)` and counts what it leaves out (by reason),
and raises the corpus's located StudbookError (params.yaml and key) for what is wrong
with the source — before anything is written.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from studbook.evidence.corpora import Corpus

# datasets' packaged builder and the file endings read from a folder, per table kind
BUILDERS = {"jsonl": ("json", (".jsonl", ".json")), "parquet": ("parquet", (".parquet",)),
            "csv": ("csv", (".csv",))}


def order(doc_id: str) -> list[str]:
    """Documents in the order of their ids' path parts: the order `sorted(Path, ...)` gives,
    which the embedded corpus (and the population's locks) was written in."""
    return doc_id.split("/")


def excluded(doc_id: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(doc_id, pattern) for pattern in patterns)


def folder_documents(corpus: Corpus, base: Path, skipped: Counter) -> Iterator[tuple[str, str, None]]:
    """Files under `base` picked by the globs.

    By hand rather than `load_dataset("text", sample_by="document")`: that builder drops
    each file's name (our id), opens files in text mode (which rewrites `\\r\\n`) and fails
    the whole load on one file that is not UTF-8; here bytes stay as they are, and
    undecodable, empty or oversized files are skipped and counted.
    """
    spec = corpus.spec
    found: dict[str, Path] = {}
    for index, pattern in enumerate(spec.globs):
        try:
            matched = [p for p in base.glob(pattern) if p.is_file()]
        except (ValueError, NotImplementedError) as exc:
            raise corpus.error(f"globs[{index}]", f"'{pattern}' is not a relative glob ({exc})") from None
        if not matched:
            raise corpus.error(f"globs[{index}]", f"'{pattern}' matches no file under {base}")
        for file in matched:
            found.setdefault(file.relative_to(base).as_posix(), file)
    for rel in sorted(found, key=order):
        if excluded(rel, spec.exclude):
            skipped["excluded"] += 1
            continue
        data = found[rel].read_bytes()
        if spec.max_document_bytes is not None and len(data) > spec.max_document_bytes:
            skipped["too_large"] += 1
            continue
        if not data.strip():
            skipped["empty"] += 1
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped["not_utf8"] += 1  # e.g. the stdlib's deliberately mis-encoded test fixtures
            continue
        yield rel, text, None


def _dataset(corpus: Corpus, path: Path, cache_dir: Path):
    """The source as one `datasets.Dataset`, read by datasets' own builders."""
    import datasets

    datasets.disable_progress_bars()
    spec = corpus.spec
    if spec.kind == "saved":
        try:
            dataset = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            raise corpus.error("path", f"not a dataset saved with save_to_disk ({exc})") from None
        if isinstance(dataset, datasets.DatasetDict):
            names = sorted(dataset)
            chosen = spec.dataset_split or (names[0] if len(names) == 1 else None)
            if chosen not in dataset:
                raise corpus.error("dataset_split", f"name one of the saved dataset's splits: {', '.join(names)}")
            dataset = dataset[chosen]
        elif spec.dataset_split is not None:
            raise corpus.error("dataset_split", "the saved dataset has no splits")
        return dataset
    builder, endings = BUILDERS[spec.kind]
    files = [path] if path.is_file() else sorted((p for p in path.rglob("*") if p.suffix in endings),
                                                 key=lambda p: order(p.relative_to(path).as_posix()))
    if not files:
        raise corpus.error("path", f"no {' or '.join(endings)} file under {path}")
    extra = {}
    if spec.kind == "csv":
        # every cell read as text, so an id like 007 keeps its zeros and a number-looking text
        # stays text; datasets' CSV builder takes no dtype, only features by column name, so
        # the header row is read here
        import csv

        with open(files[0], newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        extra["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    try:
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                     cache_dir=str(cache_dir), **extra)
    except Exception as exc:  # malformed data: datasets' own message, located in params.yaml
        raise corpus.error("path", f"cannot read {path} as {spec.kind}: {exc}") from None


def table_documents(corpus: Corpus, path: Path, cache_dir: Path, skipped: Counter) -> Iterator[tuple[str, str, str | None]]:
    import datasets

    spec = corpus.spec
    dataset = _dataset(corpus, path, cache_dir)
    columns = dataset.column_names
    fields = {"text_field": spec.text_field, "id_field": spec.id_field, "niche_field": spec.niche_field}
    for key, field in fields.items():
        if field is not None and field not in columns:
            raise corpus.error(key, f"no field '{field}' in {path} (fields: {', '.join(columns)})")
    feature = dataset.features[spec.text_field]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise corpus.error("text_field", f"field '{spec.text_field}' holds {feature}, not text")
    wanted = list(dict.fromkeys(f for f in fields.values() if f is not None))
    index = 0
    for batch in dataset.select_columns(wanted).iter(batch_size=1024):
        for row in range(len(batch[spec.text_field])):
            text = batch[spec.text_field][row] or ""
            if spec.id_field is not None:
                if batch[spec.id_field][row] is None:
                    raise corpus.error("id_field", f"row {index} of {path} has no '{spec.id_field}'")
                doc_id = str(batch[spec.id_field][row])
            else:
                doc_id = hashlib.sha256(text.encode()).hexdigest()[:16]
            niche = batch[spec.niche_field][row] if spec.niche_field is not None else None
            index += 1
            if excluded(doc_id, spec.exclude):
                skipped["excluded"] += 1
            elif spec.max_document_bytes is not None and len(text.encode()) > spec.max_document_bytes:
                skipped["too_large"] += 1
            elif not text.strip():
                skipped["empty"] += 1
            else:
                yield doc_id, text, (str(niche) if niche not in (None, "") else None)
