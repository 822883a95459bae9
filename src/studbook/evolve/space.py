"""Search spaces for `studbook evolve`: what a breeding search may vary, typed and checked once.

A search space (`conf/search/NAME.yaml`) names the operators a candidate may be bred by
(registered breeding methods), how each chooses its parents and config options, and
ranges on the method's own parameters and on the train and data groups. Optuna samples a
point, define-by-run (the operator first, then only that operator's ranges: a
conditional space), and `suggest` turns it into a `Proposal`, which holds exactly the
arguments of `repository.proposal.propose`. A candidate is therefore an ordinary
generation, bred, gated and carded like any other.

Parameter names are paths (`operator`, `lora.parameters.rank`, `train.lr`), stable across
versions, so a study resumes and a ledger row reads plainly. Sampling is Optuna's; this
module only maps a YAML tree with range leaves onto Optuna's `suggest_*` calls, which no
kept library does for a free-form tree. See docs/design/evolve.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from studbook.core.config import load_yaml, validate
from studbook.core.errors import StudbookError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatRange(_Strict):
    """`{float: [lo, hi]}`, optionally `log: true` or a `step`."""

    float: tuple[float, float]
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "FloatRange":
        low, high = self.float
        if low > high:
            raise ValueError(f"the range [{low}, {high}] is empty")
        if self.log and low <= 0:
            raise ValueError("a log range starts above 0")
        if self.log and self.step is not None:
            raise ValueError("a range is either log or stepped, not both")
        return self


class IntRange(_Strict):
    """`{int: [lo, hi]}`, optionally `log: true` or a `step`."""

    int: tuple[int, int]
    log: bool = False
    step: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "IntRange":
        low, high = self.int
        if low > high:
            raise ValueError(f"the range [{low}, {high}] is empty")
        if self.log and (low <= 0 or self.step != 1):
            raise ValueError("a log range starts above 0 and has no step")
        return self


class Choice(_Strict):
    """`{choice: [a, b, …]}`: one of the values (Optuna's categorical)."""

    choice: list[Union[str, int, float, bool, None]] = Field(min_length=1)


Leaf = Union[FloatRange, IntRange, Choice]
_LEAF_KEYS = {"float": FloatRange, "int": IntRange, "choice": Choice}


class OperatorSpace(_Strict):
    """One breeding method a candidate may use, with its parents, options and parameters."""

    parents: list[str] | Choice = Field(description="fixed parents, or a choice of one parent")
    model: str = "inherited"
    train: str | Choice = "adapter"
    data: str | Choice = "stdlib_all"
    parameters: dict[str, Any] = Field(default_factory=dict, description=(
        "the method's own parameters; any leaf may be a range or a choice"))


class Budget(_Strict):
    candidates: int = Field(ge=1, description="trials asked (noise runs not counted)")
    wall_seconds: float = Field(gt=0, description="stop asking when a candidate would not finish in time")
    candidate_seconds: float = Field(gt=0, description="cap per candidate; a longer one is timed out")
    workers: int = Field(default=2, ge=1, description="candidates bred at once")


class SamplerSpec(_Strict):
    name: Literal["tpe", "cmaes", "nsga2", "random"] = "tpe"
    seed: int = 0
    startup_trials: int = Field(default=4, ge=0)


class SelectionSpec(_Strict):
    """Candidates are scored on a few held-out items per primary task (the selection items);
    a finalist is confirmed on the others (evidence/selection.py)."""

    items_per_task: int = Field(default=8, gt=0, description="selection items per primary task")
    min_confirmation_items: int = Field(default=16, gt=0, description=(
        "refused at start if a primary task would keep fewer items to confirm on"))


class ConfirmSpec(_Strict):
    finalists: int = Field(default=1, ge=1, description="best candidates (by selection gain) confirmed")


class NoiseSpec(_Strict):
    rerun: Literal["parent", "finalist"] = Field(
        default="parent", description="what the noise run re-breeds with another seed: the reference "
        "parent (queued first; reused by later searches from the same parent), or each finalist (its "
        "twin, once the candidates are done: how far the finalist's own gain moves with the seed)")
    seed_offset: int = Field(default=1, description="the re-breed's seed: the original seed + this")

    @model_validator(mode="after")
    def _other_seed(self) -> "NoiseSpec":
        if self.seed_offset == 0:
            raise ValueError("seed_offset 0 re-breeds the parent itself: no noise is measured")
        return self


class SearchSpace(_Strict):
    description: str
    contract: str
    seed: int = Field(default=1234, description=(
        "every candidate's breeding seed: never searched, that would be selecting on noise"))
    operators: dict[str, OperatorSpace] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the train group")
    data: dict[str, Any] = Field(default_factory=dict, description="overrides of the data group")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description=(
        "fixed first trials, by parameter name (Optuna's enqueue_trial)"))
    budget: Budget
    selection: SelectionSpec = SelectionSpec()
    confirm: ConfirmSpec = ConfirmSpec()
    noise: NoiseSpec = NoiseSpec()
    sampler: SamplerSpec = SamplerSpec()


@dataclass(frozen=True)
class Proposal:
    """One sampled candidate: the arguments of `propose`, and the point it came from."""

    method: str
    parents: list[str]
    choices: dict[str, str]
    parameters: dict[str, Any]
    overrides: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)  # Optuna's point, by parameter name


def _leaf(value: Any, file: str, key: str) -> Leaf | None:
    """A range or choice leaf, validated; None for a fixed value or a sub-tree."""
    if isinstance(value, dict) and len(set(value) & set(_LEAF_KEYS)) == 1:
        (kind,) = set(value) & set(_LEAF_KEYS)
        return validate(_LEAF_KEYS[kind], value, file=file, prefix=key)
    return None


def leaves(tree: Any, file: str, key: str) -> list[tuple[str, Leaf]]:
    """Every (parameter name, leaf) of a tree, in document order."""
    leaf = _leaf(tree, file, key)
    if leaf is not None:
        return [(key, leaf)]
    if isinstance(tree, dict):
        return [found for k, v in tree.items() for found in leaves(v, file, f"{key}.{k}")]
    if isinstance(tree, list):
        return [found for i, v in enumerate(tree) for found in leaves(v, file, f"{key}[{i}]")]
    return []


def load_space(path: str | Path) -> SearchSpace:
    """A search space, validated once: the strict loader, the models, every leaf, the
    registered operators and the config options they name. Errors name file and key."""
    from studbook.operators import methods

    file = str(path)
    space = validate(SearchSpace, load_yaml(path), file=file)
    conf = Path(path).parent.parent
    for name, operator in space.operators.items():
        methods.get(name, file=file, key=f"operators.{name}")
        for group in ("model", "train", "data"):
            options = getattr(operator, group)
            for option in options.choice if isinstance(options, Choice) else [options]:
                if group == "model" and option == "inherited":
                    continue
                if not (conf / group / f"{option}.yaml").is_file():
                    raise StudbookError(f"no {group} option '{option}' in {conf / group}",
                                        file=file, key=f"operators.{name}.{group}")
        leaves(operator.parameters, file, f"operators.{name}.parameters")
    for group in ("train", "data"):
        leaves(getattr(space, group), file, group)
    names = set(parameter_names(space, file))
    for index, entry in enumerate(space.enqueue):
        for key in entry:
            if key not in names:
                raise StudbookError(f"'{key}' is not a parameter of this space (known: "
                                    f"{', '.join(sorted(names))})", file=file, key=f"enqueue[{index}].{key}")
    return space


def parameter_names(space: SearchSpace, file: str = "") -> list[str]:
    """Every parameter a trial of `space` may set, as Optuna names it."""
    names = ["operator"]
    for name, operator in space.operators.items():
        for group in ("parents", "train", "data"):
            if isinstance(getattr(operator, group), Choice):
                names.append(f"{name}.{group}")
        names += [key.split(".", 1)[1] for key, _ in
                  leaves(operator.parameters, file, f"operators.{name}.parameters")]
    return names + [key for group in ("train", "data") for key, _ in leaves(getattr(space, group), file, group)]


def _sample(trial, name: str, leaf: Leaf) -> Any:
    if isinstance(leaf, FloatRange):
        value = trial.suggest_float(name, *leaf.float, log=leaf.log, step=leaf.step)
        # a stepped value is a grid point: written as one (0.15, not 0.15000000000000002)
        return value if leaf.step is None else float(f"{value:.12g}")
    if isinstance(leaf, IntRange):
        return trial.suggest_int(name, *leaf.int, log=leaf.log, step=leaf.step)
    return trial.suggest_categorical(name, leaf.choice)


def _fill(trial, tree: Any, name: str) -> Any:
    """`tree` with each leaf replaced by the trial's value for it."""
    leaf = _leaf(tree, "", name)
    if leaf is not None:
        return _sample(trial, name, leaf)
    if isinstance(tree, dict):
        return {k: _fill(trial, v, f"{name}.{k}") for k, v in tree.items()}
    if isinstance(tree, list):
        return [_fill(trial, v, f"{name}[{i}]") for i, v in enumerate(tree)]
    return tree


def suggest(trial, space: SearchSpace, conf_dir: str | Path = "conf") -> Proposal:
    """One candidate from an Optuna trial (a live one, or `optuna.trial.FixedTrial` to
    rebuild a candidate from its ledger row). The operator is asked first, then only its
    own leaves; the train and data overrides only when its train option trains."""
    operator_name = trial.suggest_categorical("operator", sorted(space.operators))
    operator = space.operators[operator_name]

    def option(group: str) -> Any:
        value = getattr(operator, group)
        return _sample(trial, f"{operator_name}.{group}", value) if isinstance(value, Choice) else value

    parents = option("parents")
    choices = {"contract": space.contract, "model": operator.model, "train": option("train"),
               "data": option("data")}
    parameters = _fill(trial, operator.parameters, f"{operator_name}.parameters")
    trains = load_yaml(Path(conf_dir) / "train" / f"{choices['train']}.yaml").get("steps", 0) != 0
    overrides = {group: _fill(trial, getattr(space, group), group)
                 for group in ("train", "data") if trains and getattr(space, group)}
    return Proposal(method=operator_name, parents=parents if isinstance(parents, list) else [parents],
                    choices=choices, parameters=parameters, overrides=overrides,
                    params=dict(trial.params))
