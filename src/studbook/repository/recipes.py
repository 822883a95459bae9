"""Recipes: a generation's Hydra config, composed from `conf/` and validated once.

A recipe (`generations/NAME/recipe.yaml`) composes one option from each config group
(`contract`, `model`, `train`, `data`) and adds what is particular to the generation:
its name, method, parents and seed. Composition is done by Hydra's compose API (DVC
composes only under `dvc exp run`, and stages must behave the same under `dvc repro`).
Recipes hold *what* is built; device, threads and launcher never appear here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from studbook.core.config import load_yaml, validate
from studbook.core.errors import StudbookError
from studbook.repository.licenses import License

GROUPS = ("contract", "model", "train", "data")
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
OPTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")  # a file in conf/GROUP/, never a path
# OmegaConf resolvers studbook defines for recipes: none. A resolver reads something the
# recipe does not hold (`oc.env` the environment, `now` the clock), so its value would
# decide the weights without being tracked.
RESOLVERS: tuple[str, ...] = ()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """conf/model/*.yaml: any HF causal-LM architecture, built from its config class."""

    architecture: str = Field(description="HF model_type, e.g. llama, gpt2, qwen2")
    context_length: int = Field(gt=0, description="tokens (= bytes) seen at once, train and eval")
    config: dict[str, Any] = Field(default_factory=dict,
                                   description="keyword arguments of the HF config class")


class TargetSpec(Strict):
    """Stop training at the first check that reaches this bits per byte (compute-to-target)."""

    task: str = Field(description=(
        "a local lm-eval bits-per-byte task under tasks/; use a mining task, so the held-out "
        "benchmarks stay unseen by the stopping rule"))
    bits_per_byte: float = Field(gt=0, description="the target, lower is better")
    every: int = Field(default=10, gt=0, description="steps between checks")
    items: int | None = Field(default=None, gt=0, description="check on the first N documents only")


class TrainSpec(Strict):
    """conf/train/*.yaml: a bounded training budget."""

    steps: int = Field(ge=0, le=10**9, description="optimizer steps; the primary budget")
    batch_size: int = Field(gt=0, le=1 << 20, description="sequences per step")
    lr: float = Field(gt=0, le=10, description="peak AdamW learning rate")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine floor, x peak")
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(default=1.0, gt=0)
    max_seconds: float | None = Field(default=None, gt=0, description=(
        "optional wall-clock cap; a capped run is not bit-reproducible and its card says so"))
    log_every: int = Field(default=10, gt=0, description="steps between dvclive points")
    precision: Literal["fp32", "bf16-mixed"] = Field(default="fp32", description=(
        "fp32, or bf16-mixed (bfloat16 matmuls under autocast, float32 weights and optimizer); "
        "part of the recipe because it changes the weights"))
    compile: bool = Field(default=False, description=(
        "torch.compile the forward and loss (TorchInductor; needs a C compiler); changes "
        "floating-point rounding, so it is part of the recipe too"))
    target: TargetSpec | None = Field(default=None, description=(
        "train until this target is reached (or the step budget ends); the card reports "
        "the compute it took"))


class DataSpec(Strict):
    """conf/data/*.yaml: what a generation trains on."""

    corpus: str = Field(description="folder written by the prepare_data stage")
    split: Literal["train"] = "train"
    niches: list[str] | None = Field(default=None, description="restrict to these niches")
    hard_examples: float = Field(default=0.0, ge=0, le=1, description=(
        "fraction of training sequences drawn from the hard examples the parents' lineage "
        "harvested for this contract"))
    replay: float = Field(default=0.0, ge=0, le=1, description=(
        "fraction of training sequences drawn from mining items the parents score best on "
        "(so a child learns its niche without forgetting)"))
    replay_items: int = Field(default=32, gt=0, description="items replayed, per parent")

    @model_validator(mode="after")
    def _fractions(self) -> "DataSpec":
        if self.hard_examples + self.replay > 1:
            raise ValueError("hard_examples + replay may not exceed 1")
        return self


_METRIC_KEY = re.compile(r"^[^\s,]+(,[^\s,]+)?$")


def _metric_key(key: str) -> str:
    if not _METRIC_KEY.match(key):
        raise ValueError(f"'{key}' is not a metric: lm-eval's result key, `name` or `name,filter`")
    return key


Metric = Annotated[str, AfterValidator(_metric_key)]
Direction = Literal["lower", "higher"] | None


class _Directed(Strict):
    """A metric with its direction. A registered metric's direction is the registry's; any
    other's comes from its task (`evidence.tasks.check_contract`, which also checks that a
    given direction agrees with the task's `higher_is_better`)."""

    @model_validator(mode="after")
    def _direction_agrees(self):
        from studbook.evidence import metrics

        entry = metrics.registered(self.metric)
        if entry is None:
            return self
        if self.direction is None:
            object.__setattr__(self, "direction", entry.direction)
        elif self.direction != entry.direction:
            raise ValueError(f"{self.metric}: {entry.direction} is better, not {self.direction}")
        return self


class Benchmark(_Directed):
    task: str = Field(description="lm-eval task name, defined under the contract's task_folders")
    metric: Metric = Field(description=(
        "any metric the task reports (lm-eval's result key: `name`, or `name,filter` on a task "
        "with a filter_list); aggregated by a mean, or registered in studbook.evidence.metrics"))
    niche: str
    direction: Direction = Field(default=None, description="from the task; if given, must agree")


class Primary(_Directed):
    metric: Metric
    direction: Direction = None
    tasks: list[str] = Field(min_length=1, description="items of these tasks are pooled")


class Guard(_Directed):
    task: str
    metric: Metric
    direction: Direction = None
    tolerance: float = Field(ge=0, description="allowed regression, in the metric's unit")


class Compatibility(Strict):
    architectures: list[str] = Field(min_length=1, description="HF model_type values accepted")
    tokenizer_sha256: str | None = Field(default=None, description="tokenizer fingerprint")
    max_parameters: int = Field(gt=0, description=(
        "parameters a member may have; an import is counted from its safetensors headers"))
    max_vocabulary: int = Field(default=1 << 20, gt=0, description=(
        "tokenizer entries an imported model may carry (added tokens included)"))
    max_bytes: int | None = Field(default=None, gt=0, description=(
        "size of an imported model folder; default 4 bytes per allowed parameter + 64 MiB"))

    @property
    def byte_budget(self) -> int:
        return self.max_bytes if self.max_bytes is not None else 4 * self.max_parameters + (64 << 20)


class GateSpec(Strict):
    bootstrap_samples: int = Field(default=2000, ge=100)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_net_gain: float = Field(default=0.0, description="in the primary metric's unit")
    seed: int = 0


class EvaluationSpec(Strict):
    batch_size: int = Field(default=16, gt=0)
    limit: int | None = Field(default=None, gt=0, description="items per task (tests only)")
    seed: int = 1234


class HarvestSpec(Strict):
    tasks: list[str] = Field(min_length=1, description=(
        "bits-per-byte lm-eval tasks over the *mining* split (never the held-out one)"))
    per_task: int = Field(default=8, gt=0, description="hardest new items kept per task")


class Contract(Strict):
    """conf/contract/*.yaml: what a member must satisfy to be useful."""

    description: str
    task_folders: list[str] = Field(default_factory=lambda: ["tasks"], min_length=1, description=(
        "folders of lm-eval task YAMLs (relative to the repository) whose tasks this contract "
        "may name; a team keeps its own benchmarks in its own folder"))
    benchmarks: list[Benchmark] = Field(min_length=1)
    primary: Primary
    guarded: list[Guard] = Field(default_factory=list)
    compatibility: Compatibility
    gate: GateSpec = GateSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    harvest: HarvestSpec | None = None
    license: License | None = Field(default=None, description=(
        "the Hub license of the contract's members (a recipe's own `license` wins); "
        "unset: `unknown` (studbook.repository.licenses)"))

    @field_validator("task_folders")
    @classmethod
    def _inside(cls, folders: list[str]) -> list[str]:
        for folder in folders:  # DVC dependencies are repository paths, written one way
            norm = os.path.normpath(folder)
            if Path(folder).is_absolute() or norm.split(os.sep)[0] == "..":
                raise ValueError(f"task folder '{folder}' is outside the repository")
            if norm != folder:
                raise ValueError(f"write task folder '{folder}' as '{norm}'")
        return folders

    @model_validator(mode="after")
    def _known_tasks(self) -> "Contract":
        names = {b.task for b in self.benchmarks}
        if len(names) != len(self.benchmarks):
            raise ValueError("a task is listed twice among benchmarks: a benchmark is one task "
                             "scored by one metric")
        if self.harvest:
            for task in self.harvest.tasks:
                if task in names:
                    raise ValueError(f"harvest task '{task}' is also a benchmark: hard "
                                     "examples come from the mining split, never the held-out one")
        for task in self.primary.tasks:
            if task not in names:
                raise ValueError(f"primary task '{task}' is not among benchmarks")
        for guard in self.guarded:
            if guard.task not in names:
                raise ValueError(f"guarded task '{guard.task}' is not among benchmarks")
        return self


class CompoundingSpec(Strict):
    """Compare this child's compute-to-target with a model trained from scratch to it."""

    scratch: str = Field(description=(
        "a generation bred from scratch with the same train.target; the card puts both "
        "compute figures and their ratio side by side"))


class Recipe(Strict):
    name: str
    method: str
    parents: list[str] = Field(default_factory=list)
    seed: int
    parameters: dict[str, Any] = Field(default_factory=dict, description=(
        "the method's own parameters, validated by the method's schema"))
    selection: dict[str, Any] | None = Field(default=None, description=(
        "how `--parents auto` chose the parents, and why (written by propose)"))
    compounding: CompoundingSpec | None = None
    license: License | None = Field(default=None, description=(
        "the Hub license of this member's card, over its contract's"))
    contract: Contract
    model: ModelSpec
    train: TrainSpec
    data: DataSpec

    @property
    def effective_license(self) -> License:
        from studbook.repository.licenses import effective

        return effective(self.license, self.contract.license)


class ResolvedRecipe(BaseModel):
    """A validated recipe plus where each part came from (for errors and dvc deps)."""

    model_config = ConfigDict(frozen=True)

    recipe: Recipe
    recipe_file: str
    group_files: dict[str, str]  # group -> conf/<group>/<option>.yaml
    choices: dict[str, str]  # group -> option name
    resolved: dict[str, Any]  # the composed config, plain data
    parameters: Any = None  # the method's typed parameters (set by load_generation)
    kind: str = "model"  # the artifact this generation produces: model or adapter

    @property
    def contract_name(self) -> str:
        return self.choices["contract"]


def _has_path(data: Any, loc: tuple) -> bool:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True


def _defaults_choices(raw: dict, recipe_file: str, conf_dir: Path) -> dict[str, str]:
    defaults = raw.get("defaults")
    if not isinstance(defaults, list):
        raise StudbookError("a recipe needs a `defaults` list choosing one option per group "
                            f"({', '.join(GROUPS)})", file=recipe_file, key="defaults")
    choices: dict[str, str] = {}
    for index, entry in enumerate(defaults):
        if entry == "_self_":
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            raise StudbookError("each entry is `group: option`", file=recipe_file,
                                key=f"defaults[{index}]")
        (group, option), = entry.items()
        group = str(group).lstrip("/")
        if not isinstance(option, str) or not OPTION_RE.match(option):
            raise StudbookError(f"'{option}' is not an option name (letters, digits, '_', '-', '.')",
                                file=recipe_file, key=f"defaults[{index}].{group}")
        if group not in GROUPS:
            raise StudbookError(f"unknown config group '{group}' (known: {', '.join(GROUPS)})",
                                file=recipe_file, key=f"defaults[{index}]")
        option_file = conf_dir / group / f"{option}.yaml"
        if not option_file.is_file():
            known = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
            raise StudbookError(f"no {group} named '{option}' in {conf_dir / group} "
                                f"(known: {', '.join(known) or 'none'})",
                                file=recipe_file, key=f"defaults[{index}].{group}")
        choices[group] = str(option)
    missing = [g for g in GROUPS if g not in choices]
    if missing:
        raise StudbookError(f"no option chosen for group(s) {', '.join(missing)}",
                            file=recipe_file, key="defaults")
    return choices


def _resolvers(value: str) -> list[str]:
    """The OmegaConf resolvers a string calls (`${name:args}`), by OmegaConf's own grammar."""
    from omegaconf import grammar_parser
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    if "${" not in value:
        return []
    try:
        tree = grammar_parser.parse(value)
    except Exception:  # a malformed interpolation: Hydra names it when composing
        return []
    found, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            found.append(node.resolverName().getText())
        stack.extend(node.getChild(i) for i in range(getattr(node, "getChildCount", lambda: 0)()))
    return found


def check_composable(data: dict, file: str, recipe: bool) -> None:
    """What Hydra may read from a recipe or a group file: data, and interpolations between
    keys of the recipe; no resolver outside `RESOLVERS`, no Hydra settings, and (in a group
    file) no `defaults` list pulling in further files."""
    forbidden = ["hydra"] + ([] if recipe else ["defaults"])
    for key in forbidden:
        if key in data:
            raise StudbookError(f"`{key}` is not accepted here: a recipe chooses one option per "
                                f"group and nothing else decides what is composed", file=file, key=key)

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, path)
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif isinstance(value, str):
            for name in _resolvers(value):
                if name not in RESOLVERS:
                    raise StudbookError(
                        f"`${{{name}:…}}` reads a value the recipe does not hold (environment, clock, "
                        f"…), untracked by DVC; write the value itself (resolvers accepted: "
                        f"{', '.join(RESOLVERS) or 'none'})", file=file, key=path or "(top level)")

    walk(data, "")


def compose_recipe(recipe_path: str | Path, conf_dir: str | Path = "conf") -> ResolvedRecipe:
    """Compose `recipe.yaml` with Hydra and validate it; errors name file and key."""
    recipe_path, conf_dir = Path(recipe_path), Path(conf_dir)
    recipe_file = str(recipe_path)
    raw = load_yaml(recipe_path)
    choices = _defaults_choices(raw, recipe_file, conf_dir)
    group_files = {g: str(conf_dir / g / f"{o}.yaml") for g, o in choices.items()}
    check_composable(raw, recipe_file, recipe=True)
    for group_file in group_files.values():
        # every file Hydra will read passes the strict loader first, and holds only data
        check_composable(load_yaml(group_file), group_file, recipe=False)

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from omegaconf.basecontainer import BaseContainer

    try:
        with initialize_config_dir(config_dir=str(recipe_path.parent.resolve()), version_base="1.3"):
            cfg = compose(recipe_path.stem, overrides=[
                f"hydra.searchpath=[file://{conf_dir.resolve()}]"])
            registered = BaseContainer._resolvers
            BaseContainer._resolvers = {k: v for k, v in registered.items() if k in RESOLVERS}
            try:  # belt and braces: no resolver but studbook's is even registered while resolving
                resolved = OmegaConf.to_container(cfg, resolve=True)
            finally:
                BaseContainer._resolvers = registered
    except Exception as exc:  # Hydra/OmegaConf errors: interpolation, type merges
        raise StudbookError(f"cannot compose: {exc}", file=recipe_file) from None
    resolved.pop("defaults", None)

    def locate(loc: tuple) -> str:
        # a key the recipe itself sets is the recipe's fault; otherwise its group file's
        if loc and loc[0] in group_files and not _has_path(raw, loc):
            return group_files[loc[0]]
        return recipe_file

    recipe = validate(Recipe, resolved, file=recipe_file, locate=locate)
    if not NAME_RE.match(recipe.name):
        raise StudbookError("a generation name is lower-case letters, digits, '-' or '_'",
                            file=recipe_file, key="name")
    if recipe.name != recipe_path.parent.name:
        raise StudbookError(f"name '{recipe.name}' differs from its folder "
                            f"'{recipe_path.parent.name}'", file=recipe_file, key="name")
    return ResolvedRecipe(recipe=recipe, recipe_file=recipe_file, group_files=group_files,
                          choices=choices, resolved=resolved)
