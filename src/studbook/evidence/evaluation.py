"""Evaluation through lm-eval: the frozen ground truth breeding code cannot touch.

Benchmarks are lm-eval task YAMLs under a contract's task folders over local data. This
module only runs `simple_evaluate` with an `HFLM` wrapped around the loaded model, then
keeps the per-item scores (the gate's paired statistics need them) and the task versions.
A per-item row holds every metric lm-eval scores per item as a number (a registered
metric through its registry entry, e.g. bits per byte from (loglikelihood, bytes)), keyed
as lm-eval keys its results: `name` for the unfiltered responses, `name,filter` otherwise.
Progress is one report for the whole evaluation, in items scored with an ETA
(`core.progress`), in place of lm-eval's bars (one per request type and per batch).
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


def _documents(configs: list[dict], manager, tasks: list[str], limit: int | None, keep):
    """The tasks, built once (lm-eval's own order, which `simple_evaluate` is handed back);
    the document indices `keep` chooses among each task's first `limit` items (None without
    `keep`: lm-eval's `samples` and `limit` exclude each other, so the limit is applied
    here); and how many items will be scored in all (the progress bar's total)."""
    from lm_eval.tasks import get_task_dict

    built = get_task_dict(configs, manager)
    chosen: dict[str, list[int]] = {}
    total = 0
    for task in tasks:
        docs = built[task].eval_docs
        if keep is None:
            total += len(docs) if limit is None else min(limit, len(docs))
            continue
        docs = list(docs)[:limit]
        ids = [doc.get("id", str(index)) for index, doc in enumerate(docs)]
        wanted = set(keep(task, ids))
        chosen[task] = [index for index, item in enumerate(ids) if item in wanted]
        total += len(chosen[task])
    return list(built.values()), (None if keep is None else chosen), total


def _reporting(lm_class):
    """`lm_class` (lm-eval's HFLM) with its own bars off (its `disable_tqdm`) and its
    progress, in items scored, reported to `self.progress` instead: a rolling request
    (bits per byte) is done when its last window is scored — windows are scored in request
    order, one batch per `_loglikelihood_tokens` call — and other requests when their call
    returns. Nothing here touches what is computed: same requests, same batches."""
    from bisect import bisect_right
    from itertools import accumulate

    from lm_eval import utils

    class Reporting(lm_class):
        progress = None  # a core.progress.Progress
        _windows = None  # cumulative windows per rolling request, while one call runs

        def _items(self, count: int) -> int:  # under a launch this process sees its shard
            return count * self.world_size

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            counts = (sum(1 for _ in utils.get_rolling_token_windows(
                token_list=self.tok_encode(request.args[0]), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)) for request in requests)
            self._windows, self._scored, self._base = list(accumulate(counts)), 0, self.progress.done
            try:
                return super().loglikelihood_rolling(requests, disable_tqdm=True)
            finally:
                self._windows = None

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            out = super()._loglikelihood_tokens(requests, disable_tqdm=True, override_bs=override_bs)
            if self._windows is not None:
                self._scored += len(requests)
                self.progress.update(self._base + self._items(bisect_right(self._windows, self._scored)))
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            out = super().loglikelihood(requests, disable_tqdm=True)
            self.progress.advance(self._items(len({(r.task_name, r.doc_id) for r in requests})))
            return out

        def generate_until(self, requests, disable_tqdm: bool = False):
            out = super().generate_until(requests, disable_tqdm=True)
            self.progress.advance(self._items(len({(r.task_name, r.doc_id) for r in requests})))
            return out

    return Reporting


def evaluate_model(model_dir: str | Path, tasks: list[str], task_dir, spec,
                   context_length: int, keep=None) -> dict:
    """Run lm-eval on `tasks` (found under the folder or folders `task_dir`); return results
    plus per-item scores, all plain data. `keep(task, ids) -> ids`, when given, chooses the
    items scored (a search's selection items): lm-eval's `samples`, by document index."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from studbook.core import launch
    from studbook.core.progress import Progress
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
    lm = _reporting(HFLM)(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size,
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
    built, samples, total = _documents(configs, manager, tasks, spec.limit, keep)
    with Progress(f"evaluate {Path(model_dir).name}", total, "items") as lm.progress:
        raw = simple_evaluate(
            model=lm, tasks=built, task_manager=manager,
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
