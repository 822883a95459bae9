"""Evaluation through lm-eval: the frozen ground truth breeding code cannot touch.

Benchmarks are lm-eval task YAMLs under `tasks/` over local JSONL. This module only
runs `simple_evaluate` with an `HFLM` wrapped around the loaded model, then keeps the
per-item scores (the gate's paired statistics need them) and the task versions.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .atomic import atomic_dir, canonical_json, sha256_file
from .config import load_yaml
from .errors import StudbookError

# metric -> how one lm-eval sample becomes one per-item score
_LN2 = math.log(2)


def task_index(task_dir: str | Path) -> dict[str, Path]:
    """task name -> YAML file, for every task defined under `task_dir`."""
    index: dict[str, Path] = {}
    for file in sorted(Path(task_dir).rglob("*.yaml")):
        data = load_yaml(file, allow_tags=True)
        name = data.get("task")
        if isinstance(name, str):
            index[name] = file
    return index


_FUNCTION_TAG = re.compile(r"!function\s+(\S+)")


def check_task_hooks(task_dir: str | Path) -> None:
    """`!function` hooks may only name Python files inside the reviewed task folder."""
    root = Path(task_dir).resolve()
    for file in sorted(Path(task_dir).rglob("*")):
        if not file.is_file() or not (file.suffix == ".yaml" or file.name.endswith("_yaml")):
            continue
        for match in _FUNCTION_TAG.finditer(file.read_text(encoding="utf-8")):
            module = match.group(1).rsplit(".", 1)[0].replace(".", "/") + ".py"
            target = (file.parent / module).resolve()
            if root not in target.parents or not target.is_file():
                raise StudbookError(f"`!function {match.group(1)}` points outside the reviewed "
                                    f"task folder {task_dir}", file=str(file))


def item_score(metric: str, sample: dict) -> float:
    if metric == "bits_per_byte":
        loglikelihood, n_bytes = sample["bits_per_byte"]
        return -loglikelihood / (n_bytes * _LN2)
    return float(sample[metric])


def evaluate_model(model_dir: str | Path, tasks: list[str], task_dir: str | Path,
                   spec, context_length: int) -> dict:
    """Run lm-eval on `tasks`; return results plus per-item scores, all plain data."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from .artifacts import load_artifact
    from .runtime import device
    from .tokenizer import load_tokenizer

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
                if metric in ("bits_per_byte", "acc", "acc_norm"):
                    row[metric] = item_score(metric, sample)
            if "bits_per_byte" in sample:
                row["bytes"] = sample["bits_per_byte"][1]
            else:
                row["choices"] = len(sample["filtered_resps"])
            rows.append(row)
        samples[task] = rows
    return {"results": results, "samples": samples,
            "lm_eval_version": raw.get("lm_eval_version"), "max_length": context_length}


def write_evaluation(evaluation: dict, out_dir: str | Path) -> None:
    """results.json plus one per-sample JSONL log per task, written atomically."""
    with atomic_dir(out_dir) as tmp:
        summary = {k: v for k, v in evaluation.items() if k != "samples"}
        (tmp / "results.json").write_text(canonical_json(summary), encoding="utf-8")
        (tmp / "samples").mkdir()
        for task, rows in evaluation["samples"].items():
            with open(tmp / "samples" / f"{task}.jsonl", "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, sort_keys=True) + "\n")


def read_evaluation(eval_dir: str | Path, samples: bool = True) -> dict:
    """results.json, plus the per-item logs unless `samples` is False."""
    eval_dir = Path(eval_dir)
    summary = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    if not samples:
        return summary
    logs = {}
    for file in sorted((eval_dir / "samples").glob("*.jsonl")):
        with open(file, encoding="utf-8") as handle:
            logs[file.stem] = [json.loads(line) for line in handle]
    summary["samples"] = logs
    return summary
