"""Proposing a generation: its recipe and its dvc.yaml, written once from a template.

The dvc.yaml names every file the recipe composes, every parent's artifact (DVC cannot
interpolate a list of parents into `deps`) and, for each stage, exactly the code it
runs (`core.codedeps`: the stage's import closure plus the breeding method's files);
the recipe and the groups that decide the weights are DVC *params*, so `dvc exp show`,
`dvc params diff` and `dvc exp run -S` see seeds, learning rates and ranks. A lock per
generation means sibling pull requests never conflict.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from studbook.core.atomic import write_text_atomic
from studbook.core.errors import StudbookError
from studbook.repository.generation import GenerationPaths, load_generation, parents_of
from studbook.repository.recipes import NAME_RE, ResolvedRecipe, compose_recipe

DATA_FILES = ("templates/generation.dvc.yaml.j2",)
TEMPLATE = Path(__file__).parents[1] / DATA_FILES[0]


def render_recipe(name: str, method: str, parents: list[str], seed: int,
                  choices: dict[str, str], parameters: dict | None = None,
                  selection: dict | None = None, overrides: dict | None = None,
                  compounding: dict | None = None) -> str:
    lines = [f"# Generation {name}: what is bred. Runtime knobs (device, threads) never go here.",
             "defaults:"]
    lines += [f"  - {group}: {option}" for group, option in choices.items()]
    lines += ["  - _self_", "", f"name: {name}", f"method: {method}",
              f"parents: [{', '.join(parents)}]", f"seed: {seed}"]
    text = "\n".join(lines) + "\n"
    for key, value in (("parameters", parameters), ("selection", selection),
                       ("compounding", compounding)):
        if value:
            text += yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=False)
    if overrides:
        text += "# overrides of the composed groups\n"
        text += yaml.safe_dump(overrides, sort_keys=False, default_flow_style=False)
    return text


def stage_plan(resolved: ResolvedRecipe, root: str | Path = ".") -> list[dict]:
    """Each stage of the generation: its params files, dependencies and outputs."""
    from studbook.core.codedeps import stage_code
    from studbook.evidence.selection import evaluated_tasks, in_scope, read_scope, scope_file, selection_file
    from studbook.evidence.tasks import task_files, task_sources
    from studbook.operators import methods

    recipe = resolved.recipe
    paths = GenerationPaths(recipe.name)
    parents = parents_of(resolved)
    contract = resolved.contract_name
    groups = resolved.group_files
    artifact = str(paths.artifact(resolved.kind))
    scope = read_scope(recipe.name)  # a search's candidate is scored on its selection items
    scoped = [str(scope_file(recipe.name))] if scope else []
    harvest = in_scope(recipe.contract, scope).harvest

    folders = recipe.contract.task_folders

    def tasks_deps(tasks: list[str], task_dirs=folders) -> list[str]:
        out: list[str] = []
        for task in tasks:
            out += [f for f in task_files(task_dirs, task) if f not in out]
        return out

    parent_artifacts = [str(p.path) for p in parents]
    parent_evals = [str(p.eval_dir) for p in parents]
    # a parent leaves hard examples for the contract it was bred under: only same-contract ones
    parent_hard = [str(GenerationPaths(p.name).hard_examples(contract)) for p in parents
                   if recipe.contract.harvest and compose_recipe(GenerationPaths(p.name).recipe).contract_name == contract]
    # every stage resolves the generation, which imports its method's files: all three run them
    operator = methods.code_modules(recipe.method)
    breed = [*stage_code(root, "breed", operator), groups["contract"],
             *parent_artifacts]
    if recipe.train.steps:
        breed.append(recipe.data.corpus)
        if recipe.data.replay:
            breed += parent_evals
        if recipe.data.hard_examples:
            breed += parent_hard
    if recipe.train.target is not None:
        breed += tasks_deps([recipe.train.target.task], recipe.contract.task_folders)  # the stopping rule's task
    benchmark_tasks = evaluated_tasks(recipe.contract, scope)
    evaluate = [*stage_code(root, "evaluate", operator), str(paths.recipe), groups["contract"], groups["model"],
                artifact, *(parent_artifacts if resolved.kind == "adapter" else []),
                *tasks_deps(benchmark_tasks)]
    record = [*stage_code(root, "record", operator), str(paths.recipe), *(groups[g] for g in ("contract", "model",
              "train", "data")), artifact, str(paths.eval), *parent_evals, *(parent_hard if harvest else [])]
    if harvest:
        for task in harvest.tasks:  # harvest reads the mining items themselves
            record += [f for f in task_sources(folders, task)[1] if f not in record]
    if recipe.compounding:
        reference = GenerationPaths(recipe.compounding.scratch)
        record.append(str(reference.artifact("model")))
    if selection_file(recipe.name).is_file():  # a search's finalist: the noise run's scores
        record.append(str(selection_file(recipe.name)))
    record_outs = [str(paths.verdict)]
    if harvest:
        record_outs += [str(paths.hard_examples(contract)), str(paths.hard_examples_task(contract))]
    record_outs += [str(paths.card), str(paths.card_json)]
    return [
        {"name": "breed", "params": [str(paths.recipe), *(groups[g] for g in ("model", "train", "data"))],
         "deps": breed, "outs": [artifact, str(paths.live)]},
        {"name": "evaluate", "params": scoped, "deps": evaluate, "outs": [str(paths.eval)],
         "metrics": [str(paths.metrics)]},
        {"name": "record", "params": scoped, "deps": record, "outs": record_outs},
    ]


def render_dvc_yaml(resolved: ResolvedRecipe, root: str | Path = ".") -> str:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    paths = GenerationPaths(resolved.recipe.name)
    stages = stage_plan(resolved, root)
    uncached = {str(paths.verdict), str(paths.card), str(paths.card_json),
                *(o for s in stages for o in s["outs"] if o.startswith("hard_examples/"))}
    return template.render(name=resolved.recipe.name, dvc_yaml=str(paths.dvc_yaml), stages=stages,
                           uncached=uncached, trains=bool(resolved.recipe.train.steps))


def propose(name: str, method: str, parents: list[str], seed: int, choices: dict[str, str],
            conf_dir: str | Path = "conf", refresh: bool = False, parameters: dict | None = None,
            selection: dict | None = None, overrides: dict | None = None,
            compounding: dict | None = None, scope: dict | None = None) -> ResolvedRecipe:
    """Write generations/NAME/{recipe.yaml,dvc.yaml} (and `scope.yaml`, for a search's
    candidate: `evidence.selection.Scope`); nothing is written on bad input."""
    if not NAME_RE.match(name):
        raise StudbookError(f"'{name}' is not a valid generation name "
                            "(lower-case letters, digits, '-' or '_')", key="name")
    paths = GenerationPaths(name)
    if choices.get("model") == "inherited" and parents and not refresh:
        overrides = {**(overrides or {}), "model": {**inherited_model(parents[0], conf_dir),
                                                    **(overrides or {}).get("model", {})}}
    if refresh:
        if not paths.recipe.is_file():
            raise StudbookError("nothing to refresh", file=str(paths.recipe))
    else:
        if paths.folder.exists():
            raise StudbookError("generation already exists (use --refresh to rewrite its dvc.yaml)",
                                file=str(paths.folder))
        text = render_recipe(name, method, parents, seed, choices, parameters, selection, overrides,
                             compounding)
        # validate in a scratch copy first so bad input leaves the repository untouched
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            trial = Path(scratch) / name / "recipe.yaml"
            trial.parent.mkdir()
            trial.write_text(text)
            compose_recipe(trial, Path(conf_dir).resolve())
        write_text_atomic(paths.recipe, text)
        if scope is not None:
            from studbook.core.config import validate
            from studbook.evidence.selection import Scope, scope_file

            checked = validate(Scope, scope, str(scope_file(name)))
            write_text_atomic(scope_file(name), "# Written by `studbook evolve`: which held-out "
                              "items score this generation.\n"
                              + yaml.safe_dump(checked.model_dump(), sort_keys=False))
    try:
        resolved = load_generation(name, conf_dir, check_deps=False)
    except StudbookError:
        if not refresh:
            import shutil

            shutil.rmtree(paths.folder, ignore_errors=True)
        raise
    write_text_atomic(paths.dvc_yaml, render_dvc_yaml(resolved))
    return resolved


def inherited_model(parent: str, conf_dir: str | Path = "conf") -> dict:
    """The parent's architecture and context length, for a child's recipe."""
    from studbook.repository.refs import resolve_parent

    spec = resolve_parent(parent, conf_dir).model
    return {"architecture": spec.architecture, "context_length": spec.context_length}


def _fetch_hub(repo_id: str, name: str) -> Path:
    """A hub id, where the network allows: safetensors, configs and tokenizer files only."""
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise StudbookError(f"'{repo_id}' is not a local folder and the hub is offline "
                            "(HF_HUB_OFFLINE=1)", key="from")
    from huggingface_hub import snapshot_download

    target = Path("sources") / name
    try:
        snapshot_download(repo_id, local_dir=str(target),
                          allow_patterns=["*.safetensors", "*.json", "*.txt", "tokenizer.model"])
    except Exception as exc:  # network, auth, unknown repo
        raise StudbookError(f"cannot fetch '{repo_id}' from the hub: {exc}", key="from") from None
    return target


def propose_import(name: str, source: str, choices: dict[str, str], seed: int,
                   conf_dir: str | Path = "conf") -> dict:
    """A founder generation that imports an existing model folder, pinned by sha256."""
    import json

    from studbook.operators.artifacts import check_safe_folder, weights_sha256

    folder = Path(source)
    if not folder.is_dir():
        folder = _fetch_hub(source, name)
    check_safe_folder(folder)  # pickle files and auto_map refused before anything is read
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    context = next((config[k] for k in ("max_position_embeddings", "n_positions", "n_ctx")
                    if isinstance(config.get(k), int)), 512)
    params = {"source": str(folder.resolve()), "sha256": weights_sha256(folder)}
    choices = {**choices, "model": "imported", "train": "none"}
    overrides = {"model": {"architecture": str(config.get("model_type")),
                           "context_length": min(int(context), 512)}}
    propose(name, "import", [], seed, choices, conf_dir, parameters=params, overrides=overrides)
    return params


def render_root_dvc_yaml(root: str | Path = ".", trained: list[str] | tuple[str, ...] = ()) -> str:
    """The shared stages with their derived deps: one `prepare_data_NAME` per corpus in
    params.yaml (its code, its params key `corpora.NAME`, the folder or file it reads),
    then benchmark building from the embedded corpus; then one plot overlaying the
    training curve (bits per byte against the optimizer step) of every generation in
    `trained` (those whose recipe trains: the others log no curve)."""
    from studbook.core.codedeps import stage_code
    from studbook.evidence.corpora import load_corpora

    root = Path(root)
    spec = {}
    for name, corpus in load_corpora(root / "params.yaml").items():
        spec[f"prepare_data_{name}"] = {"kind": "prepare_data", "args": [name], "params": [f"corpora.{name}"],
                                        "deps": [corpus.location()] if corpus.location() else [],
                                        "outs": [corpus.out]}
    spec["build_benchmarks"] = {"kind": "build_benchmarks", "args": [], "params": ["benchmarks"],
                                "deps": ["data/corpus"], "outs": ["data/benchmarks"]}
    lines = ["# Stages every generation shares; each generation has its own generations/NAME/dvc.yaml.",
             "# Written by `studbook refresh`: code deps are each stage's import closure.", "stages:"]
    for name, stage in spec.items():
        cmd = " ".join(["python", f"stages/{stage['kind']}.py", *stage["args"]])
        lines += [f"  {name}:", f"    cmd: {cmd}", "    deps:"]
        lines += [f"      - {d}" for d in stage_code(root, stage["kind"]) + stage["deps"]]
        lines += ["    params:"] + [f"      - {p}" for p in stage["params"]]
        lines += ["    outs:"] + [f"      - {o}" for o in stage["outs"]]
    if trained:
        curve = "live/plots/metrics/train/bits_per_byte.tsv"
        lines += ["# Every generation's training curve on one chart (`dvc plots show`), written by",
                  "# `studbook refresh` from the generations whose recipe trains.",
                  "plots:", "  - training:", "      title: training loss of every generation (bits per byte)",
                  "      template: linear", "      x: step", "      x_label: optimizer step",
                  "      y_label: bits per byte", "      y:"]
        lines += [f"        {GenerationPaths(name).folder / curve}: bits_per_byte" for name in sorted(trained)]
    return "\n".join(lines) + "\n"


def refresh_all(names: list[str] | None = None, root: str | Path = ".") -> list[str]:
    """Rewrite the root dvc.yaml and each generation's from the code; returns what changed."""
    root = Path(root)
    changed, targets, trained = [], [], []
    for recipe in sorted((root / "generations").glob("*/recipe.yaml")):
        name = recipe.parent.name
        if names and name not in names:
            continue
        resolved = load_generation(name, check_deps=False)
        targets.append((root / GenerationPaths(name).dvc_yaml, render_dvc_yaml(resolved, root)))
        if resolved.recipe.train.steps:
            trained.append(name)
    if not names:  # the root's plot overlays every generation: only a whole refresh rewrites it
        targets.insert(0, (root / "dvc.yaml", render_root_dvc_yaml(root, trained)))
    for path, text in targets:
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_text_atomic(path, text)
            changed.append(str(path))
    return changed
