"""Reading `params.yaml` sections into typed models, with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from studbook.core.config import load_yaml, validate

Model = TypeVar("Model", bound=BaseModel)


def load_params_section(section: str, model: type[Model], path: str | Path = "params.yaml") -> Model:
    data = load_yaml(path)
    if section not in data:
        from studbook.core.errors import StudbookError

        raise StudbookError(f"missing section '{section}'", file=str(path), key=section)
    return validate(model, data[section], file=str(path), prefix=section)
