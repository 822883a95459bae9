"""lm-eval task files: the frozen ground truth, found by name under a contract's task folders.

A benchmark is one task YAML (plus what it `include`s, merged as lm-eval merges them)
over local data files. This module indexes tasks by name, lists the exact files one task
reads (its YAML, its includes, the Python files its `!function` hooks name, its
`dataset_kwargs.data_files`: the DVC dependencies of an evaluation of that task), derives
the metrics a task reports with their direction and aggregation (from its `metric_list`,
else lm-eval's defaults for its `output_type`, as lm-eval itself does), refuses `!function`
hooks that point outside the task folder, and checks a contract against all of that
before any compute (`check_contract`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from studbook.core.config import load_yaml
from studbook.core.errors import StudbookError

DEFAULT_FOLDERS = ("tasks",)
# `dataset_path` values that read the task's own local `data_files` (datasets' packaged builders);
# anything else would be fetched from a hub: evaluation is offline and its data a DVC dependency
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
_FUNCTION_TAG = re.compile(r"!function\s+(\S+)")


def as_folders(task_dirs) -> list[Path]:
    return [Path(task_dirs)] if isinstance(task_dirs, (str, Path)) else [Path(d) for d in task_dirs]


def _where(task_dirs) -> str:
    return ", ".join(str(d) for d in as_folders(task_dirs))


def task_index(task_dirs) -> dict[str, Path]:
    """task name -> YAML file, for every task defined under the folder(s) `task_dirs`."""
    index: dict[str, Path] = {}
    seen: set[Path] = set()
    for folder in as_folders(task_dirs):
        for file in sorted(folder.rglob("*.yaml")):
            if file.resolve() in seen:  # nested folders list a file once
                continue
            seen.add(file.resolve())
            name = load_yaml(file, allow_tags=True).get("task")
            if isinstance(name, str):
                if name in index:
                    raise StudbookError(f"task '{name}' is defined twice: {index[name]} and {file}",
                                        file=str(file), key="task")
                index[name] = file
    return index


def _find(task_dirs, task: str) -> Path:
    index = task_index(task_dirs)
    if task not in index:
        raise StudbookError(f"no lm-eval task '{task}' under {_where(task_dirs)}")
    return index[task]


def _hooks(file: Path) -> list[str]:
    """The Python files a YAML's `!function module.fn` tags import (relative to the YAML)."""
    text = file.read_text(encoding="utf-8")
    return [os.path.normpath(file.parent / (m.group(1).rsplit(".", 1)[0].replace(".", "/") + ".py"))
            for m in _FUNCTION_TAG.finditer(text)]


def task_config(file: str | Path, _seen: tuple = ()) -> tuple[dict, list[str]]:
    """A task YAML merged with its includes as lm-eval merges them (each include in order,
    then the file's own keys win), and every file that took part (the task's first)."""
    file = Path(os.path.normpath(file))
    if file in _seen:
        raise StudbookError("include cycle", file=str(_seen[-1]), key="include")
    data = load_yaml(file, allow_tags=True)
    files = [str(file)]
    includes = data.pop("include", None)
    merged: dict = {}
    for index, include in enumerate(includes if isinstance(includes, list) else
                                    [includes] if includes is not None else []):
        target = file.parent / str(include)
        if not target.is_file():
            raise StudbookError(f"included file {os.path.normpath(target)} not found", file=str(file),
                                key="include" if not isinstance(includes, list) else f"include[{index}]")
        config, more = task_config(target, (*_seen, file))
        config.pop("task_list", None)
        merged.update(config)
        files += [f for f in more if f not in files]
    merged.update(data)
    return merged, files


def _data_files(config: dict) -> list[str]:
    found = (config.get("dataset_kwargs") or {}).get("data_files") or {}
    out: list[str] = []
    for value in (found.values() if isinstance(found, dict) else [found]):
        for path in (value if isinstance(value, list) else [value]):
            if isinstance(path, str) and os.path.normpath(path) not in out:
                out.append(os.path.normpath(path))
    return out


def task_sources(task_dirs, task: str) -> tuple[list[str], list[str]]:
    """(task YAML, includes and hook modules; data files) an evaluation of `task` reads."""
    config, files = task_config(_find(task_dirs, task))
    code = list(files)
    for file in files:
        code += [h for h in _hooks(Path(file)) if h not in code]
    return code, _data_files(config)


def task_files(task_dirs, task: str) -> list[str]:
    """The files an evaluation of `task` reads: its YAML, its includes, its data files."""
    code, data = task_sources(task_dirs, task)
    return code + [f for f in data if f not in code]


def check_task_hooks(task_dirs) -> None:
    """`!function` hooks may only name Python files inside the reviewed task folder."""
    for folder in as_folders(task_dirs):
        root = folder.resolve()
        for file in sorted(folder.rglob("*")):
            if not file.is_file() or not (file.suffix == ".yaml" or file.name.endswith("_yaml")):
                continue
            for match in _FUNCTION_TAG.finditer(file.read_text(encoding="utf-8")):
                module = match.group(1).rsplit(".", 1)[0].replace(".", "/") + ".py"
                target = (file.parent / module).resolve()
                if root not in target.parents or not target.is_file():
                    raise StudbookError(f"`!function {match.group(1)}` points outside the reviewed "
                                        f"task folder {folder}", file=str(file))


@dataclass(frozen=True)
class TaskMetric:
    """One metric a task reports, as lm-eval's result key `name` or `name,filter`."""

    key: str
    direction: str | None  # "higher"/"lower" is better; None when neither task nor lm-eval says
    aggregation: str  # lm-eval's aggregation name ("mean", "bits_per_byte", ...)
    declared: str  # where the direction comes from, for messages


def _lm_eval_registry():
    import lm_eval.api.metrics  # noqa: F401  (fills the registries)
    from lm_eval.api import registry

    return registry


def task_metrics(file: str | Path) -> dict[str, TaskMetric]:
    """Every metric lm-eval reports for the task in `file`, derived as lm-eval derives it."""
    registry = _lm_eval_registry()
    config, _ = task_config(file)
    where = str(file)
    output_type = config.get("output_type", "generate_until")
    if output_type not in registry.DEFAULT_METRIC_REGISTRY:
        raise StudbookError(f"unknown output_type '{output_type}' (known: "
                            f"{', '.join(registry.DEFAULT_METRIC_REGISTRY)})", file=where, key="output_type")
    aggregations = {fn: name for name, fn in registry.AGGREGATION_REGISTRY.items()}

    def default(name: str) -> tuple[bool | None, str | None]:
        fn = registry.METRIC_AGGREGATION_REGISTRY.get(name, None)
        return registry.HIGHER_IS_BETTER_REGISTRY.get(name, None), aggregations.get(fn)

    entries: list[tuple[str, bool | None, str | None, str]] = []
    metric_list = config.get("metric_list")
    if metric_list is None:
        for name in registry.DEFAULT_METRIC_REGISTRY[output_type]:
            better, aggregation = default(name)
            entries.append((name, better, aggregation, f"lm-eval's default for {output_type}"))
    else:
        custom = config.get("process_results") is not None
        for index, entry in enumerate(metric_list if isinstance(metric_list, list) else []):
            name = entry.get("metric") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                raise StudbookError("each entry names a `metric`", file=where, key=f"metric_list[{index}]")
            if name.startswith("!function "):
                name = name.split()[-1].rsplit(".", 1)[-1]  # lm-eval names it by the function
            elif not custom and not entry.get("hf_evaluate") and name not in registry.METRIC_REGISTRY:
                raise StudbookError(f"lm-eval has no metric '{name}' (it would look for it online); "
                                    f"known: {', '.join(sorted(registry.METRIC_REGISTRY))}",
                                    file=where, key=f"metric_list[{index}].metric")
            better, aggregation = default(name)
            declared = "lm-eval's registry"
            if "higher_is_better" in entry:
                better, declared = bool(entry["higher_is_better"]), f"higher_is_better in {where}"
            if isinstance(entry.get("aggregation"), str):
                aggregation = entry["aggregation"]
            elif "aggregation" in entry:
                aggregation = "custom"
            entries.append((name, better, aggregation, declared))
    filters = config.get("filter_list")
    names = [f.get("name") for f in filters if isinstance(f, dict)] if isinstance(filters, list) else ["none"]
    out: dict[str, TaskMetric] = {}
    for filter_name in names:
        for name, better, aggregation, declared in entries:
            key = name if filter_name == "none" else f"{name},{filter_name}"
            out[key] = TaskMetric(key, None if better is None else ("higher" if better else "lower"),
                                  aggregation or "unknown", declared)
    return out


def _check_local(file: Path) -> None:
    config, _ = task_config(file)
    dataset = config.get("dataset_path")
    if not isinstance(dataset, str):
        raise StudbookError(f"a task reads local data: `dataset_path` ({', '.join(LOCAL_BUILDERS)}) "
                            "is missing", file=str(file), key="dataset_path")
    if dataset not in LOCAL_BUILDERS:
        raise StudbookError(f"dataset '{dataset}' is not local data: evaluation is offline and reads "
                            f"only tracked files (`dataset_path: {' | '.join(LOCAL_BUILDERS)}` with "
                            "`dataset_kwargs.data_files`)", file=str(file), key="dataset_path")
    if not _data_files(config):
        raise StudbookError(f"`dataset_path: {dataset}` needs `dataset_kwargs.data_files` "
                            "(the local data, a DVC dependency)", file=str(file), key="dataset_kwargs")


def check_contract(contract, file: str, founder: bool = False):
    """The contract's tasks, metrics and directions checked against its task folders and
    lm-eval, before any compute; returns the contract with every direction resolved.

    Errors name `file` (the contract) and the key at fault; the task's YAML is in the message.
    """
    from studbook.evidence import metrics

    folders = list(contract.task_folders)
    for index, folder in enumerate(folders):
        if not Path(folder).is_dir():
            raise StudbookError(f"no task folder '{folder}'", file=file, key=f"task_folders[{index}]")
    index = task_index(folders)
    check_task_hooks(folders)
    reported: dict[str, dict[str, TaskMetric]] = {}

    def known(task: str, key: str) -> dict[str, TaskMetric]:
        if task not in index:
            names = sorted(index)
            raise StudbookError(f"no lm-eval task '{task}' under {', '.join(folders)} (known: "
                                f"{', '.join(names[:12])}{', …' if len(names) > 12 else ''})",
                                file=file, key=key)
        if task not in reported:
            _check_local(index[task])
            reported[task] = task_metrics(index[task])
        return reported[task]

    def direction(task: str, metric: str, given: str | None, where: str) -> str:
        found = known(task, f"{where}.task")  # benchmarks come first: primary and guards name theirs
        if metric not in found:
            raise StudbookError(f"task '{task}' ({index[task]}) does not report '{metric}'; it reports "
                                f"{', '.join(sorted(found))}", file=file, key=f"{where}.metric")
        fact, entry = found[metric], metrics.registered(metric)
        expected = ("bits_per_byte" if entry and entry.weighted_by_bytes else "mean")
        if fact.aggregation != expected:
            raise StudbookError(
                f"'{metric}' of task '{task}' is aggregated by '{fact.aggregation}', not "
                f"{'a mean of per-item scores' if expected == 'mean' else repr(expected)}: the gate "
                "could not reproduce it item by item" + ("" if entry else
                " (register the metric in studbook.evidence.metrics to handle it)"),
                file=file, key=f"{where}.metric")
        if fact.direction is None:
            raise StudbookError(f"neither task '{task}' ({index[task]}) nor lm-eval says whether "
                                f"'{metric}' is better higher or lower: set `higher_is_better` in its "
                                "metric_list", file=file, key=f"{where}.metric")
        if given is not None and given != fact.direction:
            raise StudbookError(f"'{metric}' of task '{task}': {fact.direction} is better "
                                f"({fact.declared}), not {given}", file=file, key=f"{where}.direction")
        return fact.direction

    benchmarks = [bench.model_copy(update={"direction": direction(
        bench.task, bench.metric, bench.direction, f"benchmarks[{i}]")})
        for i, bench in enumerate(contract.benchmarks)]
    primary = contract.primary
    resolved = primary.direction
    for task in primary.tasks:
        resolved = direction(task, primary.metric, resolved, "primary")
    guarded = [guard.model_copy(update={"direction": direction(
        guard.task, guard.metric, guard.direction, f"guarded[{i}]")})
        for i, guard in enumerate(contract.guarded)]
    for i, task in enumerate(contract.harvest.tasks if contract.harvest else []):
        if "bits_per_byte" not in known(task, f"harvest.tasks[{i}]"):
            raise StudbookError(f"harvest task '{task}' does not report bits_per_byte: hard examples "
                                "are the mining items scored worst in bits per byte",
                                file=file, key=f"harvest.tasks[{i}]")
    if founder:  # gated against a know-nothing reference: it needs the metric's chance score
        gated = [("primary", primary.metric)] + [(f"guarded[{i}]", g.metric)
                                                 for i, g in enumerate(contract.guarded)]
        for where, metric in gated:
            entry = metrics.registered(metric)
            if entry is None or entry.chance is None:
                raise StudbookError(f"a founder is gated against a model that knows nothing, but "
                                    f"'{metric}' has no chance score: register one in "
                                    "studbook.evidence.metrics, or breed this generation from a parent",
                                    file=file, key=f"{where}.metric")
    return contract.model_copy(update={
        "benchmarks": benchmarks, "guarded": guarded,
        "primary": primary.model_copy(update={"direction": resolved})})
