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

from studbook.core.config import FUNCTION_TAG, load_yaml
from studbook.core.errors import StudbookError

DEFAULT_FOLDERS = ("tasks",)
# `dataset_path` values that read the task's own local `data_files` (datasets' packaged builders);
# anything else would be fetched from a hub: evaluation is offline and its data a DVC dependency
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
# task keys that make lm-eval run code or fetch text studbook has not reviewed: a Python task
# class, a custom dataset loader, a prompt from promptsource's hub, a metric from HF evaluate
REFUSED_KEYS = {"class": "a Python task class runs code outside the reviewed hooks",
                "custom_dataset": "a custom dataset loader runs code outside the reviewed hooks",
                "use_prompt": "a promptsource prompt is fetched, not reviewed"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JINJA = re.compile(r"{{|{%|{#")


@dataclass(frozen=True)
class Hook:
    """A `!function module.fn` of a task file, resolved to the reviewed Python file it names.

    lm-eval would import whatever file the tag names; studbook resolves the tag itself
    (identifiers only, relative to the task file, inside the task folder, no link on the
    way) and hands lm-eval the function, so lm-eval never resolves a path.
    """

    spec: str  # module.fn as written
    source: str  # the Python file
    task_file: str  # the YAML that names it

    def load(self):
        import importlib.util

        module_name = "studbook_task_hook_" + re.sub(r"\W", "_", self.source)
        spec = importlib.util.spec_from_file_location(module_name, self.source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, self.spec.rsplit(".", 1)[1])


def as_folders(task_dirs) -> list[Path]:
    return [Path(task_dirs)] if isinstance(task_dirs, (str, Path)) else [Path(d) for d in task_dirs]


def _where(task_dirs) -> str:
    return ", ".join(str(d) for d in as_folders(task_dirs))


def _inside(path: Path, root: Path, file: str, key: str, what: str) -> Path:
    """`path` as a normalized relative path, refused unless it lies inside `root` with no
    symbolic link on the way (a link would show a reviewer one file and read another)."""
    norm = Path(os.path.normpath(path))
    root = Path(os.path.normpath(root))
    if norm.is_absolute() != root.is_absolute() or not (norm == root or root in norm.parents):
        raise StudbookError(f"{what} {norm} lies outside the reviewed task folder {root}",
                            file=file, key=key)
    walk = norm
    while walk != root and walk != walk.parent:
        if walk.is_symlink():
            raise StudbookError(f"{what} {norm} goes through the symbolic link {walk}", file=file, key=key)
        walk = walk.parent
    if root.is_symlink():
        raise StudbookError(f"task folder {root} is a symbolic link", file=file, key=key)
    return norm


def task_index(task_dirs) -> dict[str, Path]:
    """task name -> YAML file, for every task defined under the folder(s) `task_dirs`."""
    index: dict[str, Path] = {}
    seen: set[Path] = set()
    for folder in as_folders(task_dirs):
        for file in sorted(folder.rglob("*.yaml")):
            if file.resolve() in seen:  # nested folders list a file once
                continue
            seen.add(file.resolve())
            _inside(file, folder, str(file), "task", "task file")
            name = load_yaml(file, allow_tags=True).get("task")
            if isinstance(name, str):
                if name in index:
                    raise StudbookError(f"task '{name}' is defined twice: {index[name]} and {file}",
                                        file=str(file), key="task")
                index[name] = file
    return index


def root_of(file: Path, task_dirs) -> Path:
    """The task folder `file` belongs to (the innermost, when folders nest)."""
    norm = Path(os.path.normpath(file))
    found = [Path(os.path.normpath(d)) for d in as_folders(task_dirs)
             if Path(os.path.normpath(d)) in norm.parents]
    return max(found, key=lambda d: len(d.parts)) if found else norm.parent


def _find(task_dirs, task: str) -> Path:
    index = task_index(task_dirs)
    if task not in index:
        raise StudbookError(f"no lm-eval task '{task}' under {_where(task_dirs)}")
    return index[task]


def _hooks(value, file: Path, root: Path, key: str = "") -> object:
    """`value` with every '!function module.fn' string (the strict loader keeps the tag as
    text) replaced by its checked Hook."""
    if isinstance(value, dict):
        return {k: _hooks(v, file, root, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hooks(v, file, root, f"{key}[{i}]") for i, v in enumerate(value)]
    if not (isinstance(value, str) and value.startswith(FUNCTION_TAG + " ")):
        return value
    spec = value[len(FUNCTION_TAG) + 1:].strip()
    parts = spec.split(".")
    if len(parts) < 2 or not all(_IDENTIFIER.match(p) for p in parts):
        raise StudbookError(f"`{value}`: a hook is `module.function`, Python identifiers only "
                            "(a module in the task's own folder)", file=str(file), key=key)
    source = _inside(file.parent.joinpath(*parts[:-1]).with_suffix(".py"), root, str(file), key,
                     f"`{value}` names")
    if not source.is_file():
        raise StudbookError(f"`{value}`: no file {source}", file=str(file), key=key)
    return Hook(spec, str(source), str(file))


def _check_keys(config: dict, file: str) -> None:
    for key, why in REFUSED_KEYS.items():
        if key in config:
            raise StudbookError(f"`{key}` is not accepted: {why}", file=file, key=key)
    for index, entry in enumerate(config.get("metric_list") or [] if isinstance(
            config.get("metric_list"), list) else []):
        if isinstance(entry, dict) and entry.get("hf_evaluate"):
            raise StudbookError("`hf_evaluate` loads a metric's code from the hub: use lm-eval's "
                                "registry or a reviewed `!function` hook",
                                file=file, key=f"metric_list[{index}].hf_evaluate")


def _check_templates(value, file: str, key: str = "") -> None:
    """Jinja templates must compile in the sandbox lm-eval renders them in (`sandbox`)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_templates(v, file, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_templates(v, file, f"{key}[{i}]")
    elif isinstance(value, str) and _JINJA.search(value):
        from jinja2 import TemplateSyntaxError

        from jinja2 import nodes

        try:
            tree = sandbox().parse(value)
        except TemplateSyntaxError as exc:
            raise StudbookError(f"Jinja template does not parse: {exc.message}", file=file, key=key) from None
        # the sandbox refuses these when rendering, after training; refuse them before
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            name = node.attr if isinstance(node, nodes.Getattr) else \
                node.arg.value if isinstance(node.arg, nodes.Const) else None
            if isinstance(name, str) and name.startswith("_"):
                raise StudbookError(f"Jinja template reaches the private attribute '{name}': a task "
                                    "template reads the document's fields only", file=file, key=key)


def sandbox():
    """The Jinja environment task templates render in: lm-eval's settings (strict
    undefined, trailing newline, its `regex_replace` filter) in jinja2's immutable sandbox,
    where a template cannot reach Python internals (`''.__class__.__mro__`) nor mutate."""
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from lm_eval import utils

    env = ImmutableSandboxedEnvironment(loader=BaseLoader, undefined=StrictUndefined,
                                        keep_trailing_newline=True)
    env.filters["regex_replace"] = utils.regex_replace
    return env


def _task_config(file: Path, root: Path, seen: tuple) -> tuple[dict, list[str], list[str]]:
    if file in seen:
        raise StudbookError("include cycle", file=str(seen[-1]), key="include")
    data = _hooks(load_yaml(file, allow_tags=True), file, root)
    files, hooks = [str(file)], []
    hooks += [h.source for h in _walk_hooks(data) if h.source not in hooks]
    includes = data.pop("include", None)
    merged: dict = {}
    listed = includes if isinstance(includes, list) else [includes] if includes is not None else []
    for index, include in enumerate(listed):
        key = "include" if not isinstance(includes, list) else f"include[{index}]"
        if not isinstance(include, str) or not include.endswith("yaml") or os.path.isabs(include):
            raise StudbookError(f"include {include!r}: a task file includes another by its relative "
                                "path, a name ending in .yaml or _yaml", file=str(file), key=key)
        target = _inside(file.parent / include, root, str(file), key, "included file")
        if not target.is_file():
            raise StudbookError(f"included file {target} not found", file=str(file), key=key)
        config, more, more_hooks = _task_config(target, root, (*seen, file))
        config.pop("task_list", None)
        merged.update(config)
        files += [f for f in more if f not in files]
        hooks += [h for h in more_hooks if h not in hooks]
    merged.update(data)
    return merged, files, hooks


def _walk_hooks(value) -> list[Hook]:
    if isinstance(value, Hook):
        return [value]
    if isinstance(value, dict):
        return [h for v in value.values() for h in _walk_hooks(v)]
    if isinstance(value, list):
        return [h for v in value for h in _walk_hooks(v)]
    return []


def task_config(file: str | Path, root: str | Path | None = None) -> tuple[dict, list[str]]:
    """A task YAML merged with its includes as lm-eval merges them (each include in order,
    then the file's own keys win), and every file that took part (YAMLs, then hook modules).

    Everything is resolved inside `root` (the task folder; default the file's own folder):
    includes by relative path, `!function` hooks to `Hook`s. Keys that would make lm-eval
    run or fetch unreviewed code are refused, and Jinja templates must parse in the sandbox.
    """
    file = Path(os.path.normpath(file))
    root = Path(os.path.normpath(root)) if root is not None else file.parent
    config, files, hooks = _task_config(file, root, ())
    _check_keys(config, str(file))
    _check_templates(config, str(file))
    return config, files + [h for h in hooks if h not in files]


def _data_files(config: dict) -> list[str]:
    kwargs = config.get("dataset_kwargs")
    found = (kwargs.get("data_files") if isinstance(kwargs, dict) else None) or {}
    out: list[str] = []
    for value in (found.values() if isinstance(found, dict) else [found]):
        for path in (value if isinstance(value, list) else [value]):
            if isinstance(path, str) and os.path.normpath(path) not in out:
                out.append(os.path.normpath(path))
    return out


def task_sources(task_dirs, task: str) -> tuple[list[str], list[str]]:
    """(task YAML, includes and hook modules; data files) an evaluation of `task` reads."""
    file = _find(task_dirs, task)
    config, files = task_config(file, root_of(file, task_dirs))
    return files, _data_files(config)


def task_files(task_dirs, task: str) -> list[str]:
    """The files an evaluation of `task` reads: its YAML, its includes, its data files."""
    code, data = task_sources(task_dirs, task)
    return code + [f for f in data if f not in code]


def resolved_task(task_dirs, task: str) -> dict:
    """The task's config as lm-eval takes it inline (`simple_evaluate(tasks=[dict])`):
    includes merged and every hook imported here from its reviewed file, so lm-eval
    loads no file and resolves no tag itself."""
    file = _find(task_dirs, task)
    config, _ = task_config(file, root_of(file, task_dirs))

    def load(value):
        if isinstance(value, Hook):
            return value.load()
        if isinstance(value, dict):
            return {k: load(v) for k, v in value.items()}
        if isinstance(value, list):
            return [load(v) for v in value]
        return value

    return load(config)


def check_task_hooks(task_dirs) -> None:
    """Every task file under the folders parses with the strict loader, and each of its
    includes and `!function` hooks resolves inside its own task folder."""
    for folder in as_folders(task_dirs):
        for file in sorted(folder.rglob("*")):
            if file.is_file() and (file.suffix == ".yaml" or file.name.endswith("_yaml")):
                task_config(file, root_of(file, task_dirs))


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


def task_metrics(file: str | Path, root: str | Path | None = None) -> dict[str, TaskMetric]:
    """Every metric lm-eval reports for the task in `file`, derived as lm-eval derives it."""
    registry = _lm_eval_registry()
    config, _ = task_config(file, root)
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
            if isinstance(name, Hook):
                name = name.spec.rsplit(".", 1)[-1]  # lm-eval names it by the function
            elif not isinstance(name, str):
                raise StudbookError("each entry names a `metric`", file=where, key=f"metric_list[{index}]")
            if isinstance(entry.get("metric"), Hook):
                pass
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


def _check_local(file: Path, root: Path) -> None:
    config, _ = task_config(file, root)
    dataset = config.get("dataset_path")
    if not isinstance(dataset, str):
        raise StudbookError(f"a task reads local data: `dataset_path` ({', '.join(LOCAL_BUILDERS)}) "
                            "is missing", file=str(file), key="dataset_path")
    if dataset not in LOCAL_BUILDERS:
        raise StudbookError(f"dataset '{dataset}' is not local data: evaluation is offline and reads "
                            f"only tracked files (`dataset_path: {' | '.join(LOCAL_BUILDERS)}` with "
                            "`dataset_kwargs.data_files`)", file=str(file), key="dataset_path")
    if not isinstance(config.get("dataset_kwargs", {}), dict):
        raise StudbookError("`dataset_kwargs` is a mapping (its `data_files` name the local data)",
                            file=str(file), key="dataset_kwargs")
    if not _data_files(config):
        raise StudbookError(f"`dataset_path: {dataset}` needs `dataset_kwargs.data_files` "
                            "(the local data, a DVC dependency)", file=str(file), key="dataset_kwargs")
    for path in _data_files(config):
        if os.path.isabs(path) or path.split(os.sep)[0] == "..":
            raise StudbookError(f"data file {path} is outside the repository (a DVC dependency is a "
                                "repository path)", file=str(file), key="dataset_kwargs.data_files")
        if not Path(path).is_file() and not _written_by_a_stage(path):
            raise StudbookError(f"data file {path} does not exist and no stage in dvc.yaml writes it",
                                file=str(file), key="dataset_kwargs.data_files")


def _written_by_a_stage(path: str) -> bool:
    """Whether a stage of the root dvc.yaml writes `path` (it is then checked when bred)."""
    if not Path("dvc.yaml").is_file():
        return False
    for stage in (load_yaml("dvc.yaml").get("stages") or {}).values():
        for out in (stage.get("outs") or []) if isinstance(stage, dict) else []:
            for name in (out if isinstance(out, dict) else {out: None}):
                out_path = Path(os.path.normpath(str(name)))
                if Path(path) == out_path or out_path in Path(path).parents:
                    return True
    return False


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
            _check_local(index[task], root_of(index[task], folders))
            reported[task] = task_metrics(index[task], root_of(index[task], folders))
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
        config, _ = task_config(index[task], root_of(index[task], folders))
        held_out = [f for f in _data_files(config) if "mining" not in Path(f).parts]
        if held_out:
            raise StudbookError(f"harvest task '{task}' reads {held_out[0]}, not a mining split (a "
                                "folder named `mining`): hard examples would leak held-out items "
                                "into training", file=file, key=f"harvest.tasks[{i}]")
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
