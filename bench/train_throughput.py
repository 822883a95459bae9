"""Training throughput at the founder size against this machine's fp32 matmul peak.

Prints ratios measured in one process (the machine is shared and noisy):
    python bench/train_throughput.py [--steps 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from studbook.artifacts import build_model, parameter_count
from studbook.recipes import ModelSpec, TrainSpec
from studbook.training import train

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n x n matmul over `repeats` runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/llama_3m.yaml").read_text()))
    budget = TrainSpec.model_validate({**yaml.safe_load((ROOT / "conf/train/founder.yaml").read_text()),
                                       "steps": args.steps, "log_every": args.steps})
    rng = np.random.default_rng(0)
    stream = rng.integers(3, 259, size=2_000_000).astype(np.uint16)
    peak = matmul_peak()
    model = build_model(spec, seed=0)
    warm = TrainSpec.model_validate({**budget.model_dump(), "steps": 2})
    train(build_model(spec, seed=0), stream, warm, spec.context_length, seed=0)
    result = train(model, stream, budget, spec.context_length, seed=0)
    params = parameter_count(model)
    achieved = 6 * params * result.tokens_per_second / 1e9
    print(f"matmul_peak_gflops: {peak:.1f}")
    print(f"parameters: {params}")
    print(f"train_tokens_per_second: {result.tokens_per_second:.0f}")
    print(f"train_gflops_6nd: {achieved:.1f}")
    print(f"share_of_peak: {achieved / peak:.3f}")


if __name__ == "__main__":
    main()
