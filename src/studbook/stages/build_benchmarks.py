"""Stage build_benchmarks: benchmark items per niche from the corpus (params: benchmarks)."""

from __future__ import annotations


def run() -> dict:
    from studbook.core.params import load_params_section
    from studbook.evidence.benchmarks import BenchmarkParams, build_benchmarks

    counts = build_benchmarks("data/corpus", load_params_section("benchmarks", BenchmarkParams),
                              "data/benchmarks")
    return {f"{split}_{niche}_{kind}": n for split, niches in counts.items()
            for niche, kinds in niches.items() for kind, n in kinds.items()}
