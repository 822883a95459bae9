"""Typed configs, validated once at the edge.

Every error raised here is a StudbookError naming the file a user should open and the
key path inside it. Below this module, code receives pydantic objects, never raw dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from studbook.core.errors import StudbookError

Model = TypeVar("Model", bound=BaseModel)


class _NoTagLoader(yaml.SafeLoader):
    """Safe YAML; custom tags (e.g. lm-eval's `!function`) are kept as inert strings."""


def _tag_as_string(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    return f"!{suffix} {getattr(node, 'value', '')}"


_NoTagLoader.add_multi_constructor("!", _tag_as_string)


def load_yaml(path: str | Path, allow_tags: bool = False) -> dict:
    path = Path(path)
    if not path.is_file():
        raise StudbookError("file not found", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_NoTagLoader) if allow_tags else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise StudbookError(f"malformed YAML{where}: {getattr(exc, 'problem', exc)}",
                            file=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StudbookError(f"expected a mapping at the top level, got {type(data).__name__}",
                            file=str(path))
    return data


def key_path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return error["msg"]


def validate(model: type[Model], data: Any, file: str, prefix: str = "",
             locate=None) -> Model:
    """Validate `data` into `model`; the first error names its file and key path.

    `locate(loc) -> file` lets a composed config (a recipe) point each key back at the
    file that set it.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        where = locate(loc) if locate else file
        full = key_path(((prefix,) if prefix else ()) + loc)
        raise StudbookError(_message(error), file=where, key=full) from None
