"""Evaluation: studbook's lm-eval path vs a raw batched forward pass on the same items.

Both score the contract's held-out bits-per-byte tasks (the four `stdlib_bpb_*` tasks) on
a founder-sized Llama (llama_3m, seeded random weights, so no population is needed):

- lm-eval path: `studbook.evaluation.evaluate_model` (HFLM + simple_evaluate, task
  loading, per-item samples) exactly as the evaluate stage runs it;
- raw: the same documents, byte-tokenized, cut into lm-eval's rolling windows
  (prefix token, context_len 1), padded into batches of the same size, one forward pass
  per batch, summed log-probabilities.

Prints both wall times, the overhead ratio and the two bits-per-byte figures (which must
agree: the raw pass is the reference for what lm-eval computes).

    python bench/eval_overhead.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["stdlib_bpb_general", "stdlib_bpb_tests", "stdlib_bpb_concurrency", "stdlib_bpb_net_email"]


def rolling_windows(ids: list[int], prefix: int, max_length: int) -> list[tuple[list[int], int]]:
    """lm-eval's rolling windows with context_len 1: (input ids, how many trailing targets count)."""
    tokens = [prefix] + ids
    windows, predicted = [], 0
    while predicted < len(ids):
        end = min(predicted + max_length, len(ids))
        start = max(0, end - max_length)  # input positions in `tokens` are [start, end)
        windows.append((tokens[start:end + 1], end - predicted))
        predicted = end
    return windows


def raw_bits_per_byte(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> float:
    import torch

    prefix = tokenizer.eos_token_id
    jobs = []
    for text in texts:
        jobs.extend(rolling_windows(tokenizer(text, add_special_tokens=False)["input_ids"], prefix, max_length))
    jobs.sort(key=lambda job: -len(job[0]))  # like lm-eval: longest first, little padding
    nats = 0.0
    with torch.inference_mode():
        for first in range(0, len(jobs), batch_size):
            chunk = jobs[first:first + batch_size]
            width = len(chunk[0][0]) - 1
            inputs = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, (window, _) in enumerate(chunk):
                inputs[row, :len(window) - 1] = torch.tensor(window[:-1])
            logprobs = torch.log_softmax(model(input_ids=inputs).logits.float(), dim=-1)
            for row, (window, counted) in enumerate(chunk):
                targets = torch.tensor(window[1:])
                length = len(targets)
                picked = logprobs[row, :length].gather(1, targets[:, None])[:, 0]
                nats -= picked[length - counted:].sum().item()
    total_bytes = sum(len(text.encode("utf-8")) for text in texts)
    return nats / math.log(2) / total_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import torch

    from studbook.artifacts import build_model, load_model, save_model
    from studbook.evaluation import evaluate_model
    from studbook.recipes import EvaluationSpec, ModelSpec
    from studbook.runtime import offline
    from studbook.tokenizer import build_tokenizer, load_tokenizer

    offline()
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/llama_3m.yaml").read_text()))
    contract = yaml.safe_load((ROOT / "conf/contract/stdlib_code.yaml").read_text())
    evaluation = EvaluationSpec.model_validate(contract["evaluation"])
    texts = []
    for task in TASKS:
        task_file = yaml.safe_load((ROOT / f"tasks/{task}.yaml").read_text())
        data = ROOT / task_file["dataset_kwargs"]["data_files"]["test"]
        if not data.is_file():
            raise SystemExit(f"{data} is missing: run `dvc repro dvc.yaml` first (prepares the benchmarks)")
        texts.extend(json.loads(line)["text"] for line in data.read_text().splitlines())
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        save_model(build_model(spec, seed=0), build_tokenizer(spec.context_length), folder)
        # warm-up of both paths (imports, first-call allocations), then measured
        evaluate_model(folder, TASKS[:1], ROOT / "tasks", EvaluationSpec(batch_size=evaluation.batch_size, limit=2),
                       spec.context_length)
        start = time.perf_counter()
        result = evaluate_model(folder, TASKS, ROOT / "tasks", evaluation, spec.context_length)
        lm_eval_seconds = time.perf_counter() - start

        start = time.perf_counter()
        model, tokenizer = load_model(folder), load_tokenizer(folder)
        model.eval()
        raw = raw_bits_per_byte(model, tokenizer, texts, evaluation.batch_size, spec.context_length)
        raw_seconds = time.perf_counter() - start
    pooled_bits = sum(row["bits_per_byte"] * row["bytes"] for task in TASKS for row in result["samples"][task])
    pooled = pooled_bits / sum(row["bytes"] for task in TASKS for row in result["samples"][task])
    figures = {"documents": len(texts), "threads": torch.get_num_threads(),
               "lm_eval_seconds": lm_eval_seconds, "raw_seconds": raw_seconds,
               "overhead": lm_eval_seconds / raw_seconds,
               "lm_eval_bits_per_byte": pooled, "raw_bits_per_byte": raw,
               "relative_difference": abs(pooled - raw) / raw}
    for key, value in figures.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
