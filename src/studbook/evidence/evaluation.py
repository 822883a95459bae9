"""Evaluation through lm-eval: the frozen ground truth breeding code cannot touch.

Benchmarks are lm-eval task YAMLs under `tasks/` over local JSONL. This module only
runs `simple_evaluate` with an `HFLM` wrapped around the loaded model, then keeps the
per-item scores (the gate's paired statistics need them) and the task versions.
"""

from __future__ import annotations

from pathlib import Path

from studbook.core.atomic import sha256_file
from studbook.evidence.tasks import check_task_hooks, task_index
from studbook.core.errors import StudbookError

def item_score(metric: str, sample: dict) -> float:
    from studbook.evidence.metrics import get

    return get(metric).item_score(sample[metric])


def evaluate_model(model_dir: str | Path, tasks: list[str], task_dir: str | Path,
                   spec, context_length: int) -> dict:
    """Run lm-eval on `tasks`; return results plus per-item scores, all plain data."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from studbook.operators.artifacts import load_artifact
    from studbook.core.runtime import device
    from studbook.operators.tokenizer import load_tokenizer

    known = task_index(task_dir)
    for task in tasks:
        if task not in known:
            raise StudbookError(f"no lm-eval task '{task}' under {task_dir}")
    check_task_hooks(task_dir)
    model = load_artifact(model_dir)  # an adapter is merged into its (sha256-checked) base
    tokenizer = load_tokenizer(model_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size,
              device=device(), max_length=context_length)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    raw = simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=manager, limit=spec.limit,
        log_samples=True, bootstrap_iters=0, cache_requests=False,
        random_seed=spec.seed, numpy_random_seed=spec.seed, torch_random_seed=spec.seed,
        fewshot_random_seed=spec.seed,
    )
    from studbook.evidence import metrics

    registered = set(metrics.known())
    results: dict[str, dict] = {}
    samples: dict[str, list[dict]] = {}
    for task in tasks:
        metrics = {key.split(",")[0]: value for key, value in raw["results"][task].items()
                   if key.endswith(",none") and "_stderr" not in key}
        config = raw["configs"][task]
        results[task] = {
            "metrics": metrics,
            "version": raw["versions"][task],
            "items": raw["n-samples"][task]["effective"],
            "data_files": config.get("dataset_kwargs", {}).get("data_files", {}),
            "task_file": str(known[task]),
            "task_sha256": sha256_file(known[task]),
        }
        rows = []
        for sample in sorted(raw["samples"][task], key=lambda s: s["doc_id"]):
            doc = sample["doc"]
            row = {"id": doc.get("id", str(sample["doc_id"])), "niche": doc.get("niche"),
                   "doc_hash": sample["doc_hash"]}
            for metric in sample["metrics"]:
                if metric in registered:
                    row[metric] = item_score(metric, sample)
            if "bits_per_byte" in sample:
                row["bytes"] = sample["bits_per_byte"][1]
            else:
                row["choices"] = len(sample["filtered_resps"])
            rows.append(row)
        samples[task] = rows
    return {"results": results, "samples": samples,
            "lm_eval_version": raw.get("lm_eval_version"), "max_length": context_length}
