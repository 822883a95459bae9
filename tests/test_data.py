"""Corpora from configuration: folders, JSONL, Parquet, CSV and saved datasets, built from
real files in temporary folders; the embedded stdlib corpus exactly as before."""

import hashlib
import json
import platform
import random
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_skeleton, git_dvc_init, run
from studbook.core.errors import StudbookError
from studbook.evidence import corpora
from studbook.evidence.benchmarks import BenchmarkParams, bpb_items, chunk_lines, nextline_items
from studbook.evidence.corpora import build_corpus, load_corpora, load_corpus
from studbook.evidence.data import SPLITS, describe_corpus, niche_of, read_manifest, read_split, split_of

FRACTIONS = {"train": 0.8, "mining": 0.1, "heldout": 0.1}
OUTPUTS = ("train.jsonl", "mining.jsonl", "heldout.jsonl", "manifest.json")


def params(root: Path, **entries) -> Path:
    """A params.yaml with `corpora:` at `root` (paths in it are relative to `root`)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump({"corpora": entries}, sort_keys=False))
    return root / "params.yaml"


def built(params_file: Path, name: str) -> tuple[dict, dict[str, bytes]]:
    corpus = load_corpus(name, params_file)
    manifest = build_corpus(corpus)
    out = params_file.parent / corpus.out
    return manifest, {f: (out / f).read_bytes() for f in OUTPUTS}


def records(folder: Path) -> list[dict]:
    return [r for s in SPLITS for r in read_split(folder, s)]


def test_split_is_stable_and_proportional():
    paths = [f"pkg/module_{i}.py" for i in range(4000)]
    splits = [split_of(p, "salt", FRACTIONS) for p in paths]
    assert splits == [split_of(p, "salt", FRACTIONS) for p in paths]
    share = splits.count("heldout") / len(splits)
    assert 0.085 < share < 0.115
    assert splits != [split_of(p, "other-salt", FRACTIONS) for p in paths]


def test_niche_first_match_wins():
    niches = {"tests": ["test/*", "*/test_*.py"], "concurrency": ["asyncio/*"]}
    assert niche_of("asyncio/test_x.py", niches, "general") == "tests"
    assert niche_of("asyncio/tasks.py", niches, "general") == "concurrency"
    assert niche_of("json/decoder.py", niches, "general") == "general"


def _legacy_stdlib(root: Path, out: Path, salt: str, max_bytes: int, niches: dict) -> None:
    """The embedded corpus as it was written before corpora came from configuration."""
    files = []
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root).as_posix()
        if rel.startswith(("site-packages/", "dist-packages/")) or "__pycache__" in rel:
            continue
        data = file.read_bytes()
        if len(data) > max_bytes or not data.strip():
            continue
        try:
            files.append((rel, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    content, stats, lines = hashlib.sha256(), {s: {} for s in SPLITS}, {s: "" for s in SPLITS}
    for rel, text in files:
        niche, split = niche_of(rel, niches, "general"), split_of(rel, salt, FRACTIONS)
        content.update(rel.encode() + b"\0" + text.encode() + b"\0")
        lines[split] += json.dumps({"path": rel, "niche": niche, "text": text}, ensure_ascii=False) + "\n"
        entry = stats[split].setdefault(niche, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += len(text.encode())
    out.mkdir(parents=True)
    for split in SPLITS:
        (out / f"{split}.jsonl").write_text(lines[split], encoding="utf-8")
    manifest = {"source": "python-stdlib", "python_version": platform.python_version(),
                "python_implementation": platform.python_implementation(),
                "content_sha256": content.hexdigest(), "files": len(files), "splits": stats}
    (out / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def test_the_stdlib_corpus_is_byte_identical_to_the_old_one(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    for rel, data in {"asyncio/tasks.py": b"async def f():\n    pass\n", "a-b.py": b"x = 1\n",
                      "a/b.py": b"y = 2\n", "a/test/test_b.py": b"assert True\r\n",  # CRLF kept
                      "site-packages/skip.py": b"s = 1\n", "pkg/__pycache__/c.py": b"c = 1\n",
                      "latin.py": "x = 'é'\n".encode("latin-1"), "blank.py": b"  \n",
                      "big.py": b"#" * 500 + b"\n", "uni.py": "s = 'µ ✓'\n".encode(),
                      "notes.txt": b"not python\n"}.items():
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_bytes(data)
    for i in range(40):
        (lib / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n")
    niches = {"tests": ["*/test/*"], "concurrency": ["asyncio/*"]}
    _legacy_stdlib(lib, tmp_path / "legacy", "s", 400, niches)
    shipped = yaml.safe_load(Path(__file__).parents[1].joinpath("params.yaml").read_text())["corpora"]["stdlib"]
    entry = {**shipped, "salt": "s", "max_document_bytes": 400, "niches": niches}
    monkeypatch.setattr(corpora, "stdlib_root", lambda: lib)
    manifest, files = built(params(tmp_path / "repo", stdlib=entry), "stdlib")
    for name in OUTPUTS:
        assert files[name] == (tmp_path / "legacy" / name).read_bytes(), name
    assert manifest["files"] == 45  # 40 + tasks, a-b, a/b, test_b, uni
    assert describe_corpus(manifest)["name"] == "stdlib"


def _docs(root: Path) -> Path:
    docs = root / "docs"
    for rel, text in {"README.md": "# Team handbook\n\nHow we work.\n",
                      "guides/setup.md": "## Setup\n\nRun `make`.\n", "guides/deploy.md": "## Deploy\n",
                      "src/app/main.py": "def main():\n    return 0\n", "src/app/util.py": "X = 1\n",
                      "src/app/empty.py": "\n", "notes.txt": "not picked\n"}.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_text(text)
    (docs / "guides/old.md").write_bytes("caf\xe9\n".encode("latin-1"))
    for i in range(30):
        (docs / f"src/lib/m{i}.py").parent.mkdir(parents=True, exist_ok=True)
        (docs / f"src/lib/m{i}.py").write_text("\n".join(f"def f_{i}_{j}(x):\n    return x * {j}"
                                                          for j in range(30)) + "\n")
    return docs


DOCS = {"kind": "folder", "path": "docs", "globs": ["**/*.md", "src/**/*.py"],
        "niches": {"guides": ["guides/*"], "code": ["*.py"]}, "default_niche": "handbook"}


def test_a_folder_of_markdown_and_code(tmp_path):
    _docs(tmp_path)
    manifest, _ = built(params(tmp_path, docs=DOCS), "docs")
    out = tmp_path / "data/corpora/docs"
    found = {r["id"]: r for r in records(out)}
    assert found["README.md"]["niche"] == "handbook"
    assert found["guides/setup.md"]["niche"] == "guides" and found["src/app/main.py"]["niche"] == "code"
    assert found["README.md"]["text"] == "# Team handbook\n\nHow we work.\n"
    assert "notes.txt" not in found and "src/app/empty.py" not in found and "guides/old.md" not in found
    assert all(r["path"] == r["id"] for r in found.values())
    assert manifest["name"] == "docs" and manifest["source"] == "folder" and manifest["location"] == "docs"
    assert manifest["files"] == len(found) == 35
    assert manifest["skipped"] == {"duplicate": 0, "empty": 1, "excluded": 0, "not_utf8": 1, "too_large": 0}
    assert read_manifest(out) == manifest
    assert describe_corpus(manifest) == {"name": "docs", "source": "folder", "location": "docs",
                                         "content_sha256": manifest["content_sha256"], "files": 35}
    # the benchmarks read it as they read the stdlib corpus
    bench = BenchmarkParams(splits=["train"], chunk_bytes=256, bpb_items_per_niche=5,
                            nextline_items_per_niche=7, nextline_context_bytes=100, nextline_choices=4)
    assert len(bpb_items(read_split(out, "train"), bench)["code"]) == 5
    assert len(nextline_items(read_split(out, "train"), bench)["code"]) == 7


def test_one_edited_document_changes_the_hash_and_no_split(tmp_path):
    docs = _docs(tmp_path)
    file = params(tmp_path, docs=DOCS)
    first, _ = built(file, "docs")
    before = {r["id"]: r["text"] for s in SPLITS for r in read_split(tmp_path / "data/corpora/docs", s)}
    (docs / "guides/deploy.md").write_text("## Deploy\n\nTag, then push.\n")
    second, _ = built(file, "docs")
    assert second["content_sha256"] != first["content_sha256"]
    assert second["splits"] != first["splits"]  # its bytes moved, in its own split
    for split in SPLITS:
        ids = [r["id"] for r in read_split(tmp_path / "data/corpora/docs", split)]
        assert ids == [i for i in before if split_of(i, "studbook-v1", FRACTIONS) == split]


ROWS = [{"key": f"doc-{i:03d}", "body": f"Ticket {i}: the parser fails on line {i}.\n" * (1 + i % 3),
         "team": ["web", "data", None][i % 3]} for i in range(60)]


def _write(kind: str, path: Path, rows: list[dict]) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_list(rows)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "parquet":
        table.to_parquet(str(path))
    elif kind == "csv":
        table.to_csv(str(path), index=False)
    else:
        table.save_to_disk(str(path))


TABLES = {"jsonl": "raw/tickets.jsonl", "parquet": "raw/tickets.parquet", "csv": "raw/tickets.csv",
          "saved": "raw/tickets_saved"}


def _table(kind: str, **extra) -> dict:
    return {"kind": kind, "path": TABLES[kind], "text_field": "body", "id_field": "key",
            "niche_field": "team", **extra}


@pytest.mark.parametrize("kind", list(TABLES))
def test_a_table_with_text_id_and_niche_fields(tmp_path, kind):
    _write(kind, tmp_path / TABLES[kind], ROWS)
    manifest, files = built(params(tmp_path, tickets=_table(kind)), "tickets")
    found = {r["id"]: r for r in records(tmp_path / "data/corpora/tickets")}
    assert len(found) == manifest["files"] == 60
    assert found["doc-001"]["niche"] == "data" and found["doc-002"]["niche"] == "general"  # no team
    assert found["doc-004"]["text"] == ROWS[4]["body"]
    assert manifest["source"] == kind and manifest["location"] == TABLES[kind]
    # the split depends on the id alone: every format of the same rows writes the same files
    _write("jsonl", tmp_path / "ref/raw/tickets.jsonl", ROWS)
    _, reference = built(params(tmp_path / "ref", tickets=_table("jsonl")), "tickets")
    assert all(files[f] == reference[f] for f in ("train.jsonl", "mining.jsonl", "heldout.jsonl"))


@pytest.mark.parametrize("id_field", ["key", None])
def test_splits_are_stable_under_reordering(tmp_path, id_field):
    shuffled = ROWS[:]
    random.Random(0).shuffle(shuffled)
    outputs = []
    for name, rows in (("a", ROWS), ("b", shuffled)):
        _write("jsonl", tmp_path / name / "raw/tickets.jsonl", rows)
        outputs.append(built(params(tmp_path / name, tickets=_table("jsonl", id_field=id_field)), "tickets")[1])
    assert outputs[0] == outputs[1]


def test_a_folder_of_shards_reads_as_one_file_and_hash_ids_drop_duplicates(tmp_path):
    _write("jsonl", tmp_path / "one/raw/tickets.jsonl", ROWS)
    _, single = built(params(tmp_path / "one", tickets=_table("jsonl")), "tickets")
    _write("jsonl", tmp_path / "many/raw/shards/b.jsonl", ROWS[30:])
    _write("jsonl", tmp_path / "many/raw/shards/a.jsonl", ROWS[:30])
    _, shards = built(params(tmp_path / "many", tickets=_table("jsonl", path="raw/shards")), "tickets")
    assert shards["train.jsonl"] == single["train.jsonl"]
    _write("jsonl", tmp_path / "dup/raw/tickets.jsonl", ROWS + ROWS[:5])
    manifest, _ = built(params(tmp_path / "dup", tickets=_table("jsonl", id_field=None)), "tickets")
    assert manifest["files"] == 60 and manifest["skipped"]["duplicate"] == 5
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv/t.csv").write_text('id,text\n007,"a line\nand another"\n8,12345\n')
    built(params(tmp_path / "csv", t={"kind": "csv", "path": "t.csv", "id_field": "id"}), "t")
    found = {r["id"]: r["text"] for r in records(tmp_path / "csv/data/corpora/t")}
    assert found == {"007": "a line\nand another", "8": "12345"}  # cells stay text


def test_a_saved_dataset_dict_names_its_split(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:40]),
                          "test": datasets.Dataset.from_list(ROWS[40:])}).save_to_disk(str(tmp_path / "saved"))
    entry = {"kind": "saved", "path": "saved", "text_field": "body", "id_field": "key"}
    manifest, _ = built(params(tmp_path, t=entry | {"dataset_split": "test"}), "t")
    assert manifest["files"] == 20
    with pytest.raises(StudbookError) as info:
        build_corpus(load_corpus("t", params(tmp_path, t=entry)))
    assert info.value.key == "corpora.t.dataset_split" and "test, train" in str(info.value)


# (name, corpus entry, key blamed, words in the message); docs/ and raw/tickets.jsonl exist
BAD = {
    "glob matches nothing": (DOCS | {"globs": ["**/*.md", "**/*.rst"]}, "corpora.c.globs[1]",
                             "'**/*.rst' matches no file"),
    "absolute glob": (DOCS | {"globs": ["/etc/*"]}, "corpora.c.globs[0]", "not a relative glob"),
    "path does not exist": (DOCS | {"path": "doc"}, "corpora.c.path", "no such file or folder"),
    "folder is a file": (DOCS | {"path": "raw/tickets.jsonl"}, "corpora.c.path", "not a folder"),
    "unknown kind": ({"kind": "sqlite", "path": "docs"}, "corpora.c.kind",
                     "unknown source kind 'sqlite' (known: python-stdlib, folder, jsonl"),
    "missing kind": ({"path": "docs"}, "corpora.c.kind", "required key is missing"),
    "unknown key": (DOCS | {"glob": ["*.md"]}, "corpora.c.glob", "unknown key"),
    "no globs": ({"kind": "folder", "path": "docs"}, "corpora.c.globs", "required key is missing"),
    "text field missing": (_table("jsonl", text_field="text"), "corpora.c.text_field",
                           "no field 'text' in " ),
    "niche field missing": (_table("jsonl", niche_field="group"), "corpora.c.niche_field",
                            "(fields: key, body, team)"),
    "id field missing": (_table("jsonl", id_field="uid"), "corpora.c.id_field", "no field 'uid'"),
    "two niche rules": (_table("jsonl", niches={"x": ["*"]}), "corpora.c.niche_field", "not both"),
    "bad splits": (DOCS | {"splits": {"train": 0.9, "heldout": 0.1}}, "corpora.c.splits", "exactly"),
    "out escapes": (DOCS | {"out": "../elsewhere"}, "corpora.c.out", "inside the repository"),
    "reads its own output": (DOCS | {"out": "docs/corpus"}, "corpora.c.path", "own output"),
    "a table that is not one": ({"kind": "parquet", "path": "raw/tickets.jsonl"}, "corpora.c.path",
                                "cannot read"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_naming_file_and_key(tmp_path, case):
    entry, key, words = BAD[case]
    _docs(tmp_path)
    _write("jsonl", tmp_path / TABLES["jsonl"], ROWS)
    file = params(tmp_path, c=entry)
    with pytest.raises(StudbookError) as info:
        build_corpus(load_corpus("c", file))
    assert (info.value.file, info.value.key) == (str(file), key), str(info.value)
    assert words in str(info.value) and str(file) in str(info.value)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.jsonl"))


def test_duplicate_ids_and_overlapping_outputs_are_refused(tmp_path):
    _write("jsonl", tmp_path / TABLES["jsonl"], ROWS + ROWS[:1])
    with pytest.raises(StudbookError, match="id 'doc-000' is not unique"):
        build_corpus(load_corpus("c", params(tmp_path, c=_table("jsonl"))))
    with pytest.raises(StudbookError) as info:
        load_corpora(params(tmp_path, a=DOCS | {"out": "data/x"}, b=DOCS | {"out": "data/x/y"}))
    assert info.value.key == "corpora.b.out"
    with pytest.raises(StudbookError, match="no corpus named 'd' .known: c"):
        load_corpus("d", params(tmp_path, c=DOCS))


def test_one_stage_per_corpus_and_editing_a_corpus_reruns_only_it(tmp_path):
    """`studbook refresh` writes prepare_data_NAME with the data it reads; DVC sees an edit there."""
    from studbook.repository.proposal import render_root_dvc_yaml

    repo = copy_skeleton(tmp_path / "repo")
    _docs(repo)
    _write("jsonl", repo / TABLES["jsonl"], ROWS)
    params(repo, docs=DOCS, tickets=_table("jsonl"))
    pipeline = render_root_dvc_yaml(repo)
    (repo / "dvc.yaml").write_text(pipeline)
    stages = yaml.safe_load(pipeline)["stages"]
    assert stages["prepare_data_docs"]["cmd"] == "python stages/prepare_data.py docs"
    assert stages["prepare_data_docs"]["params"] == ["corpora.docs"]
    assert stages["prepare_data_docs"]["deps"][-1] == "docs"
    assert stages["prepare_data_tickets"]["deps"][-1] == "raw/tickets.jsonl"
    assert stages["prepare_data_tickets"]["outs"] == ["data/corpora/tickets"]
    git_dvc_init(repo)
    shown = run([sys.executable, "-m", "dvc", "repro", "prepare_data_docs", "prepare_data_tickets"], repo)
    assert "content_sha256:" in shown.stdout
    (repo / "docs/guides/deploy.md").write_text("## Deploy\n\nOn Fridays, never.\n")
    status = run([sys.executable, "-m", "dvc", "status", "--json", "prepare_data_docs",
                  "prepare_data_tickets"], repo).stdout
    assert set(json.loads(status)) == {"prepare_data_docs"}
    # a bad config stops the stage before compute, naming file and key
    params(repo, docs=DOCS | {"globs": ["*.rst"]})
    failed = run([sys.executable, "stages/prepare_data.py", "docs"], repo, check=False)
    assert failed.returncode != 0
    assert "params.yaml: corpora.docs.globs[0]: '*.rst' matches no file" in failed.stderr


def test_chunks_cut_at_line_ends():
    text = "".join(f"line number {i:04d}\n" for i in range(100))
    chunks = chunk_lines(text, 200)
    assert text.startswith("".join(chunks))  # in order, nothing altered
    assert len("".join(chunks)) == len(text) - 17  # a 17-byte tail is too short to score
    assert all(c.endswith("\n") and 64 <= len(c) <= 200 for c in chunks)
