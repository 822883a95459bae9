"""Evaluation through lm-eval: the frozen ground truth breeding code cannot touch.

Benchmarks are lm-eval task YAMLs under a contract's task folders over local data. This
module only runs `simple_evaluate` with an `HFLM` wrapped around the loaded model, then
keeps the per-item scores (the gate's paired statistics need them) and the task versions.
A per-item row holds every metric lm-eval scores per item as a number (a registered
metric through its registry entry, e.g. bits per byte from (loglikelihood, bytes)), keyed
as lm-eval keys its results: `name` for the unfiltered responses, `name,filter` otherwise.
"""

from __future__ import annotations

from pathlib import Path

from studbook.core.atomic import sha256_file
from studbook.evidence.tasks import as_folders, check_task_hooks, resolved_task, sandbox, task_index
from studbook.core.errors import StudbookError


def _item_scores(sample: dict) -> dict[str, float]:
    """One lm-eval sample's per-item scores; values that are not per-item numbers (the
    perplexities' tuples, f1's (gold, prediction)) are aggregated by lm-eval only."""
    from studbook.evidence import metrics

    suffix = "" if sample.get("filter", "none") == "none" else f",{sample['filter']}"
    scores = {}
    for name in sample["metrics"]:
        entry = metrics.registered(name)
        try:
            scores[name + suffix] = (entry.item_score if entry else metrics.scalar)(sample[name])
        except (TypeError, ValueError):
            if entry is not None:
                raise
    return scores


def _chosen_documents(configs: list[dict], manager, tasks: list[str], limit: int | None,
                      keep) -> dict[str, list[int]]:
    """Document indices of the items `keep` chooses among each task's first `limit` items
    (lm-eval's `samples` and `limit` exclude each other, so the limit is applied here)."""
    from lm_eval.tasks import get_task_dict

    built = get_task_dict(configs, manager)
    chosen: dict[str, list[int]] = {}
    for task in tasks:
        docs = list(built[task].eval_docs)[:limit]
        ids = [doc.get("id", str(index)) for index, doc in enumerate(docs)]
        wanted = set(keep(task, ids))
        chosen[task] = [index for index, item in enumerate(ids) if item in wanted]
    return chosen


def evaluate_model(model_dir: str | Path, tasks: list[str], task_dir, spec,
                   context_length: int, keep=None) -> dict:
    """Run lm-eval on `tasks` (found under the folder or folders `task_dir`); return results
    plus per-item scores, all plain data. `keep(task, ids) -> ids`, when given, chooses the
    items scored (a search's selection items): lm-eval's `samples`, by document index."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from studbook.core import launch
    from studbook.operators.artifacts import load_artifact
    from studbook.operators.tokenizer import load_tokenizer

    known = task_index(task_dir)
    for task in tasks:
        if task not in known:
            raise StudbookError(f"no lm-eval task '{task}' under {', '.join(map(str, as_folders(task_dir)))}")
    check_task_hooks(task_dir)
    # an adapter is merged into its (sha256-checked) base; float32 on every device, so a
    # parent scored on a CPU and a child scored on a GPU differ by kernels, not by dtype
    model = load_artifact(model_dir).to(launch.device())
    tokenizer = load_tokenizer(model_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size,
              max_length=context_length)
    if launch.world_size() > 1:
        # Data-parallel, as lm-eval runs a model it loads itself under `accelerate launch`:
        # requests are sharded by rank and gathered on rank 0. lm-eval sets that up only for
        # a model name on GPUs; studbook loads the model itself (safetensors checks, adapters
        # merged), so it hands HFLM the process group — lm-eval's "custom distributed
        # integration" — which works over gloo on CPU processes too.
        accelerator = launch.accelerator()
        lm._rank, lm._world_size, lm.accelerator = (accelerator.process_index,
                                                     accelerator.num_processes, accelerator)
    # lm-eval is handed each task fully resolved (includes merged, hooks imported by
    # studbook from the reviewed task folders) and an empty task index, so it reads no
    # task file and resolves no tag itself; it renders templates in jinja2's sandbox
    import lm_eval.utils

    lm_eval.utils.env = sandbox()
    configs = [resolved_task(task_dir, task) for task in tasks]
    manager = TaskManager(include_path=None, include_defaults=False)
    samples = None if keep is None else _chosen_documents(configs, manager, tasks, spec.limit, keep)
    raw = simple_evaluate(
        model=lm, tasks=configs, task_manager=manager,
        limit=spec.limit if samples is None else None, samples=samples,
        log_samples=True, bootstrap_iters=0, cache_requests=False,
        random_seed=spec.seed, numpy_random_seed=spec.seed, torch_random_seed=spec.seed,
        fewshot_random_seed=spec.seed,
    )
    if raw is None:  # a launched process other than the main one: rank 0 holds the results
        return None
    results: dict[str, dict] = {}
    samples: dict[str, list[dict]] = {}
    for task in tasks:
        figures = {}
        for key, value in raw["results"][task].items():
            name, _, filter_name = key.partition(",")
            if filter_name and "_stderr" not in name:
                figures[name if filter_name == "none" else key] = value
        config = raw["configs"][task]
        results[task] = {
            "metrics": figures,
            "version": raw["versions"][task],
            "items": raw["n-samples"][task]["effective"],
            "data_files": config.get("dataset_kwargs", {}).get("data_files", {}),
            "task_file": str(known[task]),
            "task_sha256": sha256_file(known[task]),
        }
        multiple_choice = config.get("output_type") == "multiple_choice"
        rows: dict[int, dict] = {}  # one row per document, whatever the filters
        for sample in sorted(raw["samples"][task], key=lambda s: s["doc_id"]):
            doc = sample["doc"]
            row = rows.setdefault(sample["doc_id"], {
                "id": doc.get("id", str(sample["doc_id"])), "niche": doc.get("niche"),
                "doc_hash": sample["doc_hash"]})
            row.update(_item_scores(sample))
            if "bits_per_byte" in sample:
                row["bytes"] = sample["bits_per_byte"][1]
            elif multiple_choice:
                row["choices"] = len(sample["filtered_resps"])
        samples[task] = list(rows.values())
    return {"results": results, "samples": samples,
            "lm_eval_version": raw.get("lm_eval_version"), "max_length": context_length}
