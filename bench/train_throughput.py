"""Training throughput at the founder size vs a plain Hugging Face loop and the machine's peak.

In one process (the machine is shared and noisy, so only same-run ratios mean much):

- the fp32 matmul peak: best GFLOP/s of square matmuls (n = 1024, 2048, 4096) over
  repeats, measured before and after the training runs;
- a plain HF loop: `model(input_ids, labels=input_ids).loss`, `torch.optim.AdamW`,
  backward, step — what a user would write first;
- studbook's `train()` with the founder's budget, as is (conf/train/founder.yaml: fp32,
  eager) and fast (conf/train/founder_fast.yaml: bf16-mixed, torch.compile; its one-off
  compilation is excluded, like the warm-up steps of the other two).

Both train the founder's architecture (conf/model/llama_3m.yaml) on the same random byte
stream, batch 8 x 512, alternating twice (A B A B) and keeping each one's best.
Model FLOPs per token follow PaLM (Chowdhery et al. 2022, app. B): 6 N + 12 L d T
(N parameters, L layers, d width, T context), so the share of peak is a model-FLOPs
utilisation.

    python bench/train_throughput.py [--steps 12] [--json OUT]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from studbook.operators.artifacts import build_model, parameter_count
from studbook.repository.recipes import ModelSpec, TrainSpec
from studbook.operators.training import train

from common import report  # the bench folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]


def matmul_peak(dtype=torch.float32, sizes=(1024, 2048, 4096), repeats: int = 10) -> float:
    """Best GFLOP/s of an n x n matmul."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_token(model, context: int) -> float:
    config = model.config
    return 6 * parameter_count(model) + 12 * config.num_hidden_layers * config.hidden_size * context


def plain_loop(spec: ModelSpec, stream: np.ndarray, steps: int, batch: int, lr: float) -> float:
    """Tokens per second of the loop a user writes first (after 2 warm-up steps)."""
    model = build_model(spec, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    data = torch.from_numpy(stream.astype(np.int64))
    generator = torch.Generator().manual_seed(0)
    context = spec.context_length
    start = None
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        offsets = torch.randint(0, len(data) - context, (batch,), generator=generator)
        ids = torch.stack([data[o:o + context] for o in offsets.tolist()])
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch * context / (time.perf_counter() - start)


def studbook_loop(spec: ModelSpec, stream: np.ndarray, budget: TrainSpec) -> float:
    """Tokens per second of `train()`, after a 2-step run on the same model (compiles, warms)."""
    model = build_model(spec, seed=0)
    warm = TrainSpec.model_validate({**budget.model_dump(), "steps": 2, "log_every": 2})
    train(model, stream, warm, spec.context_length, seed=1)
    return train(model, stream, budget, spec.context_length, seed=0).tokens_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/llama_3m.yaml").read_text()))
    budgets = {name: TrainSpec.model_validate({**yaml.safe_load((ROOT / f"conf/train/{name}.yaml").read_text()),
                                               "steps": args.steps, "log_every": args.steps})
               for name in ("founder", "founder_fast")}
    stream = np.random.default_rng(0).integers(3, 259, size=2_000_000).astype(np.uint16)
    peak = matmul_peak()
    plain, ours, fast = 0.0, 0.0, 0.0
    for _ in range(2):
        plain = max(plain, plain_loop(spec, stream, args.steps, budgets["founder"].batch_size,
                                      budgets["founder"].lr))
        ours = max(ours, studbook_loop(spec, stream, budgets["founder"]))
        if fast and fast < ours / 4:
            continue  # bf16 emulated (no AVX-512 BF16/AMX): a second slow sample changes nothing
        fast = max(fast, studbook_loop(spec, stream, budgets["founder_fast"]))
    peak = max(peak, matmul_peak())  # before and after: a busy neighbour must not lower the yardstick
    per_token = flops_per_token(build_model(spec, seed=0), spec.context_length)
    figures = {
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": peak,
        "bf16_matmul_peak_gflops": matmul_peak(torch.bfloat16, sizes=(1024, 2048), repeats=3),  # emulated (slow) without AVX-512 BF16/AMX
        "parameters": parameter_count(build_model(spec, seed=0)),
        "flops_per_token": per_token,
        "plain_tokens_per_second": plain,
        "plain_share_of_peak": plain * per_token / 1e9 / peak,
        "studbook_tokens_per_second": ours,
        "studbook_share_of_peak": ours * per_token / 1e9 / peak,
        "studbook_vs_plain": ours / plain,
        "fast_tokens_per_second": fast,
        "fast_share_of_peak": fast * per_token / 1e9 / peak,
        "fast_vs_plain": fast / plain,
    }
    report(figures, args.json)

if __name__ == "__main__":
    main()
