import json

from studbook.evidence.benchmarks import BenchmarkParams, bpb_items, chunk_lines, nextline_items
from studbook.evidence.data import DataParams, build_corpus, niche_of, split_of

FRACTIONS = {"train": 0.8, "mining": 0.1, "heldout": 0.1}


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


def test_corpus_from_a_source_tree(tmp_path):
    root = tmp_path / "lib"
    (root / "asyncio").mkdir(parents=True)
    (root / "site-packages").mkdir()
    for i in range(30):
        (root / "asyncio" / f"m{i}.py").write_text("\n".join(
            f"def function_{i}_{j}(argument):\n    return argument * {j}" for j in range(40)) + "\n")
    (root / "site-packages" / "skip.py").write_text("x = 1\n")
    (root / "latin.py").write_bytes("x = 'é'\n".encode("latin-1"))
    params = DataParams(salt="s", splits=FRACTIONS, max_file_bytes=10_000,
                        niches={"concurrency": ["asyncio/*"]})
    manifest = build_corpus(params, tmp_path / "corpus", root=root)
    assert manifest["files"] == 30  # site-packages and the non-UTF-8 file are left out
    again = build_corpus(params, tmp_path / "corpus2", root=root)
    assert again["content_sha256"] == manifest["content_sha256"]
    records = [json.loads(line) for s in ("train", "mining", "heldout")
               for line in (tmp_path / "corpus" / f"{s}.jsonl").read_text().splitlines()]
    assert {r["niche"] for r in records} == {"concurrency"}
    bench = BenchmarkParams(splits=["heldout"], chunk_bytes=256, bpb_items_per_niche=5,
                            nextline_items_per_niche=7, nextline_context_bytes=100, nextline_choices=4)
    items = bpb_items(records, bench)["concurrency"]
    assert len(items) == 5 and all(len(i["text"].encode()) <= 256 for i in items)
    mc = nextline_items(records, bench)["concurrency"]
    assert len(mc) == 7
    for item in mc:
        assert len(set(item["choices"])) == 4 and 0 <= item["label"] < 4
        assert len(item["context"].encode()) <= 100


def test_chunks_cut_at_line_ends():
    text = "".join(f"line number {i:04d}\n" for i in range(100))
    chunks = chunk_lines(text, 200)
    assert text.startswith("".join(chunks))  # in order, nothing altered
    assert len("".join(chunks)) == len(text) - 17  # a 17-byte tail is too short to score
    assert all(c.endswith("\n") and 64 <= len(c) <= 200 for c in chunks)
