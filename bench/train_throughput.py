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

Then the same comparison with a subword tokenizer, as a team's model has: a BPE
tokenizer (vocabulary 3,000) trained here with `tokenizers` on standard-library source, a
Qwen2 of the founder's size carrying it, and the documents packed by studbook's own
packing (`operators.packing`, the breed stage's path; its tokens/s is reported too).
studbook's `train()` (through Accelerate) against the plain loop on the same stream.
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
from studbook.operators.packing import Stream, pack
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


def plain_loop(spec: ModelSpec, stream: Stream, steps: int, batch: int, lr: float, make=None) -> float:
    """Tokens per second of the loop a user writes first (after 2 warm-up steps)."""
    model = make() if make else build_model(spec, seed=0)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    data = torch.from_numpy(stream.ids.astype(np.int64))
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


def studbook_loop(spec: ModelSpec, stream: Stream, budget: TrainSpec, make=None) -> float:
    """Tokens per second of `train()`, after a 2-step run on the same model (compiles, warms)."""
    model = make() if make else build_model(spec, seed=0)
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
    stream = Stream(ids=np.random.default_rng(0).integers(3, 259, size=2_000_000).astype(np.int32),
                    documents=1, text_bytes=2_000_000)
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
    figures.update(subword(spec, budgets["founder"], args.steps))
    report(figures, args.json)


def subword(spec: ModelSpec, budget: TrainSpec, steps: int) -> dict:
    """A Qwen2 of the founder's size with a 3,000-entry BPE tokenizer: studbook vs plain."""
    import sys
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from pico import stdlib_sample, train_tokenizer  # the tests' tokenizer trainer

    texts = stdlib_sample(400)
    tokenizer = train_tokenizer("bpe", texts[:60], vocab_size=3000, max_length=spec.context_length)
    start = time.perf_counter()
    stream = pack(texts, tokenizer)
    packing = len(stream) / (time.perf_counter() - start)
    sizes = {k: spec.config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads", "tie_word_embeddings")}
    config = AutoConfig.for_model("qwen2", **sizes, num_key_value_heads=2, vocab_size=len(tokenizer),
                                  max_position_embeddings=spec.context_length,
                                  eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)

    def make():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config)

    plain = ours = 0.0
    for _ in range(2):
        plain = max(plain, plain_loop(spec, stream, steps, budget.batch_size, budget.lr, make))
        ours = max(ours, studbook_loop(spec, stream, budget, make))
    return {"subword_vocabulary": len(tokenizer), "subword_parameters": parameter_count(make()),
            "subword_bytes_per_token": stream.bytes_per_token,
            "subword_packing_tokens_per_second": packing,
            "subword_plain_tokens_per_second": plain, "subword_studbook_tokens_per_second": ours,
            "subword_studbook_vs_plain": ours / plain}

if __name__ == "__main__":
    main()
