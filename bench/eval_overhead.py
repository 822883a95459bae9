"""Evaluation: studbook's lm-eval path vs a raw batched forward pass on the same items.

Both score the contract's held-out bits-per-byte tasks (the four `stdlib_bpb_*` tasks) on
a founder-sized Llama (llama_3m, seeded random weights, so no population is needed):

- lm-eval path: `studbook.evidence.evaluation.evaluate_model` (HFLM + simple_evaluate, task
  loading, per-item samples) exactly as the evaluate stage runs it;
- raw: the same documents, byte-tokenized, cut into lm-eval's rolling windows
  (prefix token, context_len 1), padded into batches of the same size, one forward pass
  per batch, summed log-probabilities (`studbook.operators.targets.bits_per_byte`, the check that
  training to a target uses).

Prints both wall times, the overhead ratio and the two bits-per-byte figures (which must
agree: the raw pass is the reference for what lm-eval computes).

    python bench/eval_overhead.py [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

from common import report  # the bench folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["stdlib_bpb_general", "stdlib_bpb_tests", "stdlib_bpb_concurrency", "stdlib_bpb_net_email"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import torch

    from studbook.operators.artifacts import build_model, load_model, save_model
    from studbook.evidence.evaluation import evaluate_model
    from studbook.repository.recipes import EvaluationSpec, ModelSpec
    from studbook.core.runtime import offline
    from studbook.operators.targets import bits_per_byte
    from studbook.operators.tokenizer import build_tokenizer, load_tokenizer

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
        raw = bits_per_byte(model, tokenizer, texts, evaluation.batch_size, spec.context_length)
        raw_seconds = time.perf_counter() - start
    pooled_bits = sum(row["bits_per_byte"] * row["bytes"] for task in TASKS for row in result["samples"][task])
    pooled = pooled_bits / sum(row["bytes"] for task in TASKS for row in result["samples"][task])
    figures = {"documents": len(texts), "threads": torch.get_num_threads(),
               "lm_eval_seconds": lm_eval_seconds, "raw_seconds": raw_seconds,
               "overhead": lm_eval_seconds / raw_seconds,
               "lm_eval_bits_per_byte": pooled, "raw_bits_per_byte": raw,
               "relative_difference": abs(pooled - raw) / raw}
    report(figures, args.json)

if __name__ == "__main__":
    main()
