"""Stage prepare_data: one corpus, `corpora.NAME` in params.yaml, split by a hash of each id.

`python stages/prepare_data.py NAME` writes the corpus's folder (`out`; the embedded
stdlib corpus's is data/corpus). The root dvc.yaml has one stage per corpus,
`prepare_data_NAME`, rather than a `foreach`: each corpus has its own data dependency
(its folder or file; none for the standard library) and DVC cannot interpolate a list
into `deps`; and as separate stages, each with its own params key `corpora.NAME`, adding
or editing one corpus never re-runs another.
"""

from __future__ import annotations


def run(name: str) -> dict:
    from studbook.evidence.corpora import build_corpus, load_corpus

    manifest = build_corpus(load_corpus(name))
    splits = manifest["splits"]
    identity = {key: manifest[key] for key in ("python_version", "location") if key in manifest}
    return {"corpus": name, "source": manifest["source"], **identity,
            "content_sha256": manifest["content_sha256"], "files": manifest["files"],
            **{f"{s}_bytes": sum(n["bytes"] for n in splits[s].values()) for s in splits}}
