"""Parent references: a generation name resolved to its artifact and content hashes.

A parent is named in a recipe by its generation name. Before use it is resolved to
the artifact it produced (`models/NAME/` or `adapters/NAME/`, decided by the parent's
own recipe, so resolution works before the parent is bred) and, once bred, to the
sha256 of its weights: children pin content, not names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from studbook.core.errors import StudbookError

ARTIFACT_ROOTS = {"model": "models", "adapter": "adapters"}


def artifact_dir(name: str, kind: str) -> Path:
    return Path(ARTIFACT_ROOTS[kind]) / name


@dataclass(frozen=True)
class Parent:
    name: str
    kind: str  # "model" or "adapter"
    model: Any = field(default=None, compare=False)  # its recipe's ModelSpec (known before breeding)
    contract: str | None = field(default=None, compare=False)  # the contract it was bred under

    @property
    def path(self) -> Path:
        return artifact_dir(self.name, self.kind)

    @property
    def eval_dir(self) -> Path:
        return Path("generations") / self.name / "eval"

    def exists(self) -> bool:
        return (self.path / "studbook.json").is_file()

    @cached_property
    def meta(self) -> dict:
        from studbook.operators.artifacts import read_meta

        if not self.exists():
            raise StudbookError(f"parent '{self.name}' has not been bred yet; run "
                                f"`dvc repro generations/{self.name}/dvc.yaml`", file=str(self.path))
        return read_meta(self.path)

    @cached_property
    def sha256(self) -> str:
        from studbook.operators.artifacts import weights_sha256

        return weights_sha256(self.path)

    @cached_property
    def config(self) -> dict[str, Any]:
        """The HF model config: the artifact's own, or for an adapter its base's."""
        if self.kind == "adapter":
            return json.loads((Path(self.meta["base"]["path"]) / "config.json").read_text())
        return json.loads((self.path / "config.json").read_text())


def resolve_parent(name: str, conf_dir: str | Path = "conf") -> Parent:
    """Which artifact a generation produces, read from its recipe."""
    from studbook.operators import methods
    from studbook.core.config import validate
    from studbook.repository.recipes import compose_recipe

    recipe_file = Path("generations") / name / "recipe.yaml"
    if not recipe_file.is_file():
        raise StudbookError(f"parent '{name}' does not exist (no generations/{name}/)",
                            file=str(recipe_file))
    resolved = compose_recipe(recipe_file, conf_dir)
    method = methods.get(resolved.recipe.method, file=str(recipe_file))
    params = validate(method.parameters, resolved.recipe.parameters, file=str(recipe_file),
                      prefix="parameters")
    return Parent(name, method.kind(params), resolved.recipe.model, resolved.contract_name)


@dataclass(frozen=True)
class BreedContext:
    """What a breeding method receives: the validated recipe, its parameters, its parents."""

    recipe: Any
    params: Any
    parents: list[Parent]
    out_dir: Path
    contract_name: str
    recipe_file: str
