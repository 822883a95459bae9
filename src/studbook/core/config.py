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


MAX_YAML_BYTES = 1 << 20  # recipes, contracts and task files are a few kB; a megabyte is a bomb
MAX_NODES = 100_000  # nodes after expanding aliases: what every later reader walks
MAX_ALIASES = 100
MAX_DEPTH = 64
FUNCTION_TAG = "!function"  # lm-eval's hook tag, the only tag a task file may carry


class _Refused(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class StrictLoader(yaml.SafeLoader):
    """The one YAML loader for everything a pull request may contain.

    PyYAML's SafeLoader builds no Python objects, but still accepts what lets a contributor
    say one thing to a reviewer and another to a program: directives (`%TAG !e! !func`
    turns `!e!tion` into a hook), verbatim and %-escaped tags (`!<!function>`,
    `!%66unction`), aliases that expand exponentially (the 516-byte bomb), nesting deep
    enough to overflow the stack, and duplicate keys (the reviewer sees the first, the
    loader keeps the last). This subclass refuses all of them, each with its line.
    It is written here because no kept library offers a bounded YAML loader; it stays
    pure Python (SafeLoader's scanner, not libyaml's) so that the raw text of each tag can
    be checked.
    """

    allow_function = False

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def fetch_directive(self):
        raise _Refused("YAML directives (%TAG, %YAML) are not accepted", self.get_mark())

    def scan_tag(self):
        start = self.get_mark()
        token = super().scan_tag()
        raw = start.buffer[start.pointer:token.end_mark.pointer] if start.buffer else ""
        if not (self.allow_function and raw == FUNCTION_TAG):
            allowed = f"only `{FUNCTION_TAG}`, written so, in a task file" if self.allow_function \
                else "this file takes no tags"
            raise _Refused(f"YAML tag '{raw}' is not accepted ({allowed})", start)
        return token

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases", self.peek_event().start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def expanded(item, path: frozenset) -> int:  # aliases share nodes: count each use
            if id(item) in path:
                raise _Refused("an alias refers to the node that contains it", item.start_mark)
            if id(item) not in sizes:
                children = item.value if isinstance(item, yaml.SequenceNode) else \
                    [n for pair in item.value for n in pair] if isinstance(item, yaml.MappingNode) else []
                inner = path | {id(item)}
                sizes[id(item)] = 1 + sum(expanded(child, inner) for child in children)
                if sizes[id(item)] > MAX_NODES:
                    raise _Refused(f"more than {MAX_NODES:,} nodes once aliases are expanded",
                                   item.start_mark)
            return sizes[id(item)]

        if node is not None:
            expanded(node, frozenset())
        return node

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        raise _Refused(f"key '{key_node.value}' appears twice (a reviewer reads one, "
                                       "a program the other)", key_node.start_mark)
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


class _TaskLoader(StrictLoader):
    """A task file: `!function module.fn` kept as the inert string '!function module.fn'
    (evidence.tasks resolves it inside the reviewed task folders)."""

    allow_function = True


def _function_as_string(loader, node) -> str:
    return f"{FUNCTION_TAG} {loader.construct_scalar(node)}"


_TaskLoader.add_constructor(FUNCTION_TAG, _function_as_string)


def parse_yaml(text: str, file: str, allow_tags: bool = False) -> dict:
    """Parse untrusted YAML text with the strict loader; errors name `file` and the line."""
    if len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise StudbookError(f"larger than {MAX_YAML_BYTES // 1024} KiB", file=file)
    try:
        data = yaml.load(text, Loader=_TaskLoader if allow_tags else StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise StudbookError(f"malformed YAML{where}: {getattr(exc, 'problem', None) or exc}",
                            file=file) from None
    except RecursionError:
        raise StudbookError("malformed YAML: nested too deeply", file=file) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StudbookError(f"expected a mapping at the top level, got {type(data).__name__}",
                            file=file)
    return data


def load_yaml(path: str | Path, allow_tags: bool = False) -> dict:
    """A repository YAML file (a regular file, not a link), parsed with the strict loader."""
    path = Path(path)
    if path.is_symlink():
        raise StudbookError("a symbolic link: the file a reviewer sees must be the file read",
                            file=str(path))
    if not path.is_file():
        raise StudbookError("file not found", file=str(path))
    if path.stat().st_size > MAX_YAML_BYTES:
        raise StudbookError(f"larger than {MAX_YAML_BYTES // 1024} KiB", file=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise StudbookError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None
    return parse_yaml(text, str(path), allow_tags)


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
