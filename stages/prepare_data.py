"""Stage prepare_data: the stdlib-code corpus, split by file hash (params: data)."""

from studbook.data import DataParams, build_corpus
from studbook.params import load_params_section
from studbook.runtime import offline, summary


def main() -> None:
    offline()
    params = load_params_section("data", DataParams)
    manifest = build_corpus(params, "data/corpus")
    splits = manifest["splits"]
    summary({
        "python_version": manifest["python_version"],
        "content_sha256": manifest["content_sha256"],
        "files": manifest["files"],
        **{f"{s}_bytes": sum(n["bytes"] for n in splits[s].values()) for s in splits},
    })


if __name__ == "__main__":
    main()
