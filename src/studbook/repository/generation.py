"""A generation is a folder: `generations/NAME/` with its recipe, dvc.yaml and dvc.lock.

`propose` writes the folder once from a template; the dvc.yaml names every file the
recipe composes and every parent's artifact, because DVC cannot interpolate a list of
parents into `deps`. A lock per generation means sibling pull requests never conflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studbook.core.config import load_yaml
from studbook.core.errors import StudbookError
from studbook.repository.recipes import ResolvedRecipe, compose_recipe


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
    def compute(self) -> Path:
        """Wall time and host of the breeding (git-tracked, never a DVC output: volatile)."""
        return self.folder / "compute.json"

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
        from studbook.repository.refs import artifact_dir

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
    from studbook.operators import methods

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
    from studbook.core.config import validate
    from studbook.repository.refs import resolve_parent

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
        found = resolve_parent(parent, conf_dir)
        kind = found.kind
        if found.contract != resolved.contract_name:
            _check_other_contract(resolved, found, conf_dir)
        if kind not in method.parent_kinds:
            raise StudbookError(f"method '{method.name}' takes {' or '.join(method.parent_kinds)} "
                                f"parents, but '{parent}' is an {kind}",
                                file=resolved.recipe_file, key=f"parents[{index}]")
    check_acyclic(name)
    resolved = resolved.model_copy(update={"parameters": params, "kind": method.kind(params)})
    if method.uses_model_spec:
        from studbook.operators.compat import check_model_spec

        check_model_spec(recipe.model, resolved.group_files["model"])
    if recipe.parents:
        _check_inherited_model(resolved, method, resolve_parent(recipe.parents[0], conf_dir))
    if hasattr(params, "check_against"):  # parameters that name parents (merges)
        params.check_against(recipe.parents, file=resolved.recipe_file)
    from studbook.evidence.tasks import check_contract, task_index

    # tasks, metrics and directions against the contract's task folders and lm-eval
    contract = check_contract(recipe.contract, resolved.group_files["contract"],
                              founder=not recipe.parents)
    recipe = recipe.model_copy(update={"contract": contract})
    resolved = resolved.model_copy(update={"recipe": recipe})
    harvest = recipe.contract.harvest
    target = recipe.train.target
    if target is not None:
        if target.task not in task_index(recipe.contract.task_folders):
            raise StudbookError(f"no lm-eval task '{target.task}' under "
                                f"{', '.join(recipe.contract.task_folders)}",
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


def _check_other_contract(resolved: ResolvedRecipe, parent, conf_dir: str | Path) -> None:
    """A parent bred under another contract was evaluated on that contract's tasks only.
    The gate compares child and parent item by item on the primary and guarded tasks, and
    replay reads the parent's mining items: each must be among the tasks the parent's own
    contract evaluates, or the child would fail after training."""
    from studbook.core.config import validate
    from studbook.repository.recipes import Contract

    file = Path(conf_dir) / "contract" / f"{parent.contract}.yaml"
    theirs = validate(Contract, load_yaml(file), file=str(file))
    evaluated = {b.task for b in theirs.benchmarks} | set(theirs.harvest.tasks if theirs.harvest else [])
    mine, where = resolved.recipe.contract, resolved.group_files["contract"]
    needed = [(task, f"primary.tasks[{i}]") for i, task in enumerate(mine.primary.tasks)]
    needed += [(g.task, f"guarded[{i}].task") for i, g in enumerate(mine.guarded)]
    if resolved.recipe.data.replay and mine.harvest:
        needed += [(task, f"harvest.tasks[{i}]") for i, task in enumerate(mine.harvest.tasks)]
    for task, key in needed:
        if task not in evaluated:
            raise StudbookError(f"parent '{parent.name}' was bred under contract '{parent.contract}', "
                                f"which does not evaluate '{task}': the child is compared with its "
                                "parents item by item on it (breed the child under the parent's "
                                "contract, or add the task to it)", file=where, key=key)


def check_acyclic(name: str) -> None:
    """No generation descends from itself. Parents are read from each recipe's `parents`
    (strict loader, no composition), so a cycle made by editing a recipe is named before
    DVC sees a cyclic graph, which would stop every `dvc repro`, related or not."""
    def parents(of: str) -> list[str]:
        file = GenerationPaths(of).recipe
        found = load_yaml(file).get("parents") if file.is_file() else []
        return [p for p in found if isinstance(p, str)] if isinstance(found, list) else []

    path: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in path:
            cycle = path[path.index(node):] + [node]
            raise StudbookError(f"the parents form a cycle: {' → '.join(reversed(cycle))}",
                                file=str(GenerationPaths(path[-1]).recipe), key="parents")
        if node in done:
            return
        path.append(node)
        for parent in parents(node):
            visit(parent)
        path.pop()
        done.add(node)

    visit(name)


def _check_inherited_model(resolved: ResolvedRecipe, method, parent) -> None:
    """A child's model is its (first) parent's: same architecture and context length; a
    distilled student is of its teacher's architecture, with no longer a context."""
    mine, theirs = resolved.recipe.model, parent.model
    hint = (f"parent '{parent.name}' is a {theirs.architecture} with context length "
            f"{theirs.context_length}; `studbook propose` with `--model inherited` writes both")
    if mine.architecture != theirs.architecture:
        raise StudbookError(f"the child's model is a {mine.architecture}, but {hint}",
                            file=resolved.recipe_file, key="model.architecture")
    if mine.context_length != theirs.context_length and not (
            method.uses_model_spec and mine.context_length < theirs.context_length):
        raise StudbookError(f"the child's context length is {mine.context_length}, but {hint}",
                            file=resolved.recipe_file, key="model.context_length")


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


def check_declared_deps(resolved: ResolvedRecipe) -> None:
    """The generation's dvc.yaml must list every file the recipe composes (else stale runs).

    The whole plan (code included) is compared with the shipped files by a test and
    rewritten by `studbook refresh`; here, at run time, only the recipe's own choices.
    """
    dvc_yaml = GenerationPaths(resolved.recipe.name).dvc_yaml
    lock = dvc_yaml.with_name("dvc.lock")
    if lock.is_file():  # DVC parses it with a permissive loader: a bomb there stops dvc itself
        load_yaml(lock)
    if not dvc_yaml.is_file():
        return
    declared = set()
    for stage in (load_yaml(dvc_yaml).get("stages") or {}).values():
        declared.update(str(d) for d in stage.get("deps", []))
        for entry in stage.get("params", []):  # `- file:` (all of a params file) or `- key`
            declared.update(entry if isinstance(entry, dict) else [])
    for group, file in resolved.group_files.items():
        if file not in declared:
            raise StudbookError(f"composes {file} but {dvc_yaml} does not depend on it; "
                                f"re-run `studbook propose {resolved.recipe.name} --refresh`",
                                file=resolved.recipe_file, key=f"defaults.{group}")


def parents_of(resolved: ResolvedRecipe, conf_dir: str | Path = "conf") -> list:
    from studbook.repository.refs import resolve_parent

    return [resolve_parent(p, conf_dir) for p in resolved.recipe.parents]


@dataclass(frozen=True)
class Generation:
    """One generation resolved once: its validated recipe, method entry, parents and paths.

    Every stage receives this object; nothing below it composes a recipe or resolves a
    parent again.
    """

    resolved: ResolvedRecipe
    method: Any  # the breeding method's registry entry
    parents: list  # [refs.Parent], in recipe order

    @property
    def name(self) -> str:
        return self.resolved.recipe.name

    @property
    def recipe(self):
        return self.resolved.recipe

    @property
    def kind(self) -> str:
        return self.resolved.kind

    @property
    def contract_name(self) -> str:
        return self.resolved.contract_name

    @property
    def paths(self) -> GenerationPaths:
        return GenerationPaths(self.name)

    @property
    def artifact(self) -> Path:
        return self.paths.artifact(self.kind)

    def file(self, group: str) -> str:
        """Where a part of the recipe came from (errors name it)."""
        return self.resolved.group_files.get(group, self.resolved.recipe_file)


def resolve(name: str, conf_dir: str | Path = "conf") -> Generation:
    """Compose, validate and resolve generations/NAME once; errors name file and key."""
    from studbook.operators import methods

    resolved = load_generation(name, conf_dir)
    return Generation(resolved=resolved,
                      method=methods.get(resolved.recipe.method, file=resolved.recipe_file),
                      parents=parents_of(resolved, conf_dir))
