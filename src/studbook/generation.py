"""A generation is a folder: `generations/NAME/` with its recipe, dvc.yaml and dvc.lock.

`propose` writes the folder once from a template; the dvc.yaml names every file the
recipe composes and every parent's artifact, because DVC cannot interpolate a list of
parents into `deps`. A lock per generation means sibling pull requests never conflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .atomic import write_text_atomic
from .errors import StudbookError
from .recipes import NAME_RE, ResolvedRecipe, compose_recipe

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class GenerationPaths:
    name: str

    @property
    def folder(self) -> Path:
        return Path("generations") / self.name

    @property
    def recipe(self) -> Path:
        return self.folder / "recipe.yaml"

    @property
    def dvc_yaml(self) -> Path:
        return self.folder / "dvc.yaml"

    @property
    def bred(self) -> Path:
        return self.folder / "bred"

    @property
    def live(self) -> Path:
        return self.folder / "live"

    @property
    def eval(self) -> Path:
        return self.folder / "eval"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.json"

    @property
    def verdict(self) -> Path:
        return self.folder / "verdict.json"

    def artifact(self, kind: str) -> Path:
        from .refs import artifact_dir

        return artifact_dir(self.name, kind)

    def hard_examples(self, contract: str) -> Path:
        return Path("hard_examples") / contract / f"{self.name}.jsonl"

    def hard_examples_task(self, contract: str) -> Path:
        return Path("hard_examples") / contract / f"{self.name}.yaml"

    @property
    def card(self) -> Path:
        return Path("cards") / f"{self.name}.md"

    @property
    def card_json(self) -> Path:
        return Path("cards") / f"{self.name}.json"


def load_generation(name: str, conf_dir: str | Path = "conf", check_deps: bool = True) -> ResolvedRecipe:
    """Compose and check a generation's recipe; every error names file and key."""
    from . import methods

    paths = GenerationPaths(name)
    if not paths.recipe.is_file():
        raise StudbookError(f"no generation named '{name}'", file=str(paths.recipe))
    resolved = compose_recipe(paths.recipe, conf_dir)
    recipe = resolved.recipe
    method = methods.get(recipe.method, file=resolved.recipe_file)
    count = len(recipe.parents)
    if count < method.min_parents or (method.max_parents is not None and count > method.max_parents):
        wanted = (f"{method.min_parents}" if method.min_parents == method.max_parents
                  else f"{method.min_parents} to {method.max_parents or 'any'}")
        raise StudbookError(f"method '{method.name}' takes {wanted} parent(s), got {count}",
                            file=resolved.recipe_file, key="parents")
    from .config import validate
    from .refs import resolve_parent

    params = validate(method.parameters, recipe.parameters, file=resolved.recipe_file,
                      prefix="parameters")
    if len(set(recipe.parents)) != len(recipe.parents):
        raise StudbookError("a parent is named twice", file=resolved.recipe_file, key="parents")
    for index, parent in enumerate(recipe.parents):
        if parent == name:
            raise StudbookError("a generation cannot be its own parent",
                                file=resolved.recipe_file, key=f"parents[{index}]")
        if not GenerationPaths(parent).recipe.is_file():
            raise StudbookError(f"parent '{parent}' does not exist (no generations/{parent}/)",
                                file=resolved.recipe_file, key=f"parents[{index}]")
        kind = resolve_parent(parent, conf_dir).kind
        if kind not in method.parent_kinds:
            raise StudbookError(f"method '{method.name}' takes {' or '.join(method.parent_kinds)} "
                                f"parents, but '{parent}' is an {kind}",
                                file=resolved.recipe_file, key=f"parents[{index}]")
    resolved = resolved.model_copy(update={"parameters": params, "kind": method.kind(params)})
    if hasattr(params, "check_against"):  # parameters that name parents (merges)
        params.check_against(recipe.parents, file=resolved.recipe_file)
    from .evaluation import task_index

    tasks = task_index("tasks")
    contract_file = resolved.group_files["contract"]
    for index, bench in enumerate(recipe.contract.benchmarks):
        if bench.task not in tasks:
            raise StudbookError(f"no lm-eval task '{bench.task}' under tasks/",
                                file=contract_file, key=f"benchmarks[{index}].task")
    harvest = recipe.contract.harvest
    for index, task in enumerate(harvest.tasks if harvest else []):
        if task not in tasks:
            raise StudbookError(f"no lm-eval task '{task}' under tasks/",
                                file=contract_file, key=f"harvest.tasks[{index}]")
    target = recipe.train.target
    if target is not None:
        if target.task not in tasks:
            raise StudbookError(f"no lm-eval task '{target.task}' under tasks/",
                                file=resolved.group_files["train"], key="target.task")
        if any(b.task == target.task for b in recipe.contract.benchmarks):
            raise StudbookError(f"'{target.task}' is one of the contract's benchmarks: a stopping "
                                "rule must not see held-out items (use a mining task)",
                                file=resolved.group_files["train"], key="target.task")
        mined = harvest is not None and target.task in harvest.tasks
        if mined and (recipe.data.hard_examples or recipe.data.replay):
            raise StudbookError(f"the target is checked on '{target.task}', whose items this generation "
                                "would also train on (hard examples and replay are mining items); "
                                "set data.hard_examples and data.replay to 0",
                                file=resolved.group_files["data"],
                                key="hard_examples" if recipe.data.hard_examples else "replay")
    if recipe.compounding is not None:
        _check_compounding(name, resolved, conf_dir)
    if check_deps:
        check_declared_deps(resolved)
    return resolved


def _check_compounding(name: str, resolved: ResolvedRecipe, conf_dir: str | Path) -> None:
    """The scratch reference exists, is bred from scratch, and trains to the same target."""
    recipe, file = resolved.recipe, resolved.recipe_file
    reference = recipe.compounding.scratch
    if recipe.train.target is None:
        raise StudbookError("compounding compares compute-to-target, but the train budget has no "
                            "target", file=resolved.group_files["train"], key="target")
    if reference == name or not GenerationPaths(reference).recipe.is_file():
        raise StudbookError(f"scratch reference '{reference}' does not exist (no generations/{reference}/)",
                            file=file, key="compounding.scratch")
    other = compose_recipe(GenerationPaths(reference).recipe, conf_dir).recipe
    if other.parents:
        raise StudbookError(f"scratch reference '{reference}' has parents ({', '.join(other.parents)}); "
                            "it must be bred from scratch", file=file, key="compounding.scratch")
    mine, theirs = recipe.train.target, other.train.target
    if theirs is None or (theirs.task, theirs.bits_per_byte, theirs.every, theirs.items) != \
            (mine.task, mine.bits_per_byte, mine.every, mine.items):
        raise StudbookError(f"scratch reference '{reference}' does not train to the same target "
                            f"({mine.task} <= {mine.bits_per_byte} bits/byte)",
                            file=file, key="compounding.scratch")


def parents_of(resolved: ResolvedRecipe, conf_dir: str | Path = "conf") -> list:
    from .refs import resolve_parent

    return [resolve_parent(p, conf_dir) for p in resolved.recipe.parents]


def check_declared_deps(resolved: ResolvedRecipe) -> None:
    """The generation's dvc.yaml must list every file the recipe composes (else stale runs)."""
    dvc_yaml = GenerationPaths(resolved.recipe.name).dvc_yaml
    if not dvc_yaml.is_file():
        return
    declared = set()
    for stage in (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).values():
        declared.update(str(d) for d in stage.get("deps", []))
    for group, file in resolved.group_files.items():
        if file not in declared:
            raise StudbookError(f"composes {file} but {dvc_yaml} does not depend on it; "
                                f"re-run `studbook propose {resolved.recipe.name} --refresh`",
                                file=resolved.recipe_file, key=f"defaults.{group}")


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


def render_dvc_yaml(resolved: ResolvedRecipe) -> str:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    template = env.from_string((TEMPLATES / "generation.dvc.yaml.j2").read_text())
    recipe = resolved.recipe
    paths = GenerationPaths(recipe.name)
    parents = parents_of(resolved)
    contract = resolved.contract_name
    extra_breed = getattr(resolved.parameters, "breed_deps", lambda: [])()
    return template.render(
        name=recipe.name,
        artifact=str(paths.artifact(resolved.kind)),
        breed_deps=[str(d) for d in extra_breed],
        has_parents=bool(parents),
        harvest=recipe.contract.harvest is not None,
        hard_examples=str(paths.hard_examples(contract)),
        hard_examples_task=str(paths.hard_examples_task(contract)),
        parent_hard_examples=[str(GenerationPaths(p.name).hard_examples(contract)) for p in parents
                              if recipe.contract.harvest is not None],
        dvc_yaml=str(paths.dvc_yaml),
        recipe_file=str(paths.recipe),
        group_files=[resolved.group_files[g] for g in ("model", "train", "data")],
        contract_file=resolved.group_files["contract"],
        corpus=recipe.data.corpus,
        parent_artifacts=[str(p.path) for p in parents],
        parent_evals=[str(p.eval_dir) for p in parents],
        target=recipe.train.target is not None,
        scratch_reference=([str(GenerationPaths(recipe.compounding.scratch).artifact("model")),
                            str(GenerationPaths(recipe.compounding.scratch).live)]
                           if recipe.compounding else []),
    )


def propose(name: str, method: str, parents: list[str], seed: int, choices: dict[str, str],
            conf_dir: str | Path = "conf", refresh: bool = False, parameters: dict | None = None,
            selection: dict | None = None, overrides: dict | None = None,
            compounding: dict | None = None) -> ResolvedRecipe:
    """Write generations/NAME/{recipe.yaml,dvc.yaml}; nothing is written on bad input."""
    if not NAME_RE.match(name):
        raise StudbookError(f"'{name}' is not a valid generation name "
                            "(lower-case letters, digits, '-' or '_')", key="name")
    paths = GenerationPaths(name)
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
    try:
        resolved = load_generation(name, conf_dir, check_deps=False)
    except StudbookError:
        if not refresh:
            import shutil

            shutil.rmtree(paths.folder, ignore_errors=True)
        raise
    write_text_atomic(paths.dvc_yaml, render_dvc_yaml(resolved))
    return resolved


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

    from .artifacts import check_safe_folder, weights_sha256

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
