"""Stage build_benchmarks: benchmark items per niche from the corpus (params: benchmarks)."""

from studbook.benchmarks import BenchmarkParams, build_benchmarks
from studbook.params import load_params_section
from studbook.runtime import offline, summary


def main() -> None:
    offline()
    params = load_params_section("benchmarks", BenchmarkParams)
    counts = build_benchmarks("data/corpus", params, "data/benchmarks")
    summary({
        f"{split}_{niche}_{kind}": n
        for split, niches in counts.items()
        for niche, kinds in niches.items()
        for kind, n in kinds.items()
    })


if __name__ == "__main__":
    main()
