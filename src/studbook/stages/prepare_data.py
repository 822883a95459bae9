"""Stage prepare_data: the stdlib-code corpus, split by file hash (params: data)."""

from __future__ import annotations


def run() -> dict:
    from studbook.core.params import load_params_section
    from studbook.evidence.data import DataParams, build_corpus

    manifest = build_corpus(load_params_section("data", DataParams), "data/corpus")
    splits = manifest["splits"]
    return {"python_version": manifest["python_version"], "content_sha256": manifest["content_sha256"],
            "files": manifest["files"],
            **{f"{s}_bytes": sum(n["bytes"] for n in splits[s].values()) for s in splits}}
