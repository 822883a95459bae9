"""lm-eval task files: the frozen ground truth, found by name under the reviewed task folder.

A benchmark is one task YAML (plus what it `include`s) over local data files. This module
indexes tasks by name, lists the exact files one task reads (its YAML, its includes and
its `dataset_kwargs.data_files`: the DVC dependencies of an evaluation of that task), and
refuses `!function` hooks that point outside the task folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from studbook.core.config import load_yaml
from studbook.core.errors import StudbookError


def task_index(task_dir: str | Path) -> dict[str, Path]:
    """task name -> YAML file, for every task defined under `task_dir`."""
    index: dict[str, Path] = {}
    for file in sorted(Path(task_dir).rglob("*.yaml")):
        data = load_yaml(file, allow_tags=True)
        name = data.get("task")
        if isinstance(name, str):
            index[name] = file
    return index


def task_files(task_dir: str | Path, task: str) -> list[str]:
    """The files an evaluation of `task` reads: its YAML, its includes, its data files."""
    index = task_index(task_dir)
    if task not in index:
        raise StudbookError(f"no lm-eval task '{task}' under {task_dir}")
    files: list[str] = []
    data_files: list[str] = []
    file: Path | None = index[task]
    while file is not None and str(file) not in files:
        files.append(str(file))
        data = load_yaml(file, allow_tags=True)
        found = (data.get("dataset_kwargs") or {}).get("data_files") or {}
        for value in (found.values() if isinstance(found, dict) else [found]):
            for path in (value if isinstance(value, list) else [value]):
                if isinstance(path, str) and path not in data_files:
                    data_files.append(path)
        include = data.get("include")
        file = (file.parent / include) if isinstance(include, str) else None
    return files + data_files


_FUNCTION_TAG = re.compile(r"!function\s+(\S+)")


def check_task_hooks(task_dir: str | Path) -> None:
    """`!function` hooks may only name Python files inside the reviewed task folder."""
    root = Path(task_dir).resolve()
    for file in sorted(Path(task_dir).rglob("*")):
        if not file.is_file() or not (file.suffix == ".yaml" or file.name.endswith("_yaml")):
            continue
        for match in _FUNCTION_TAG.finditer(file.read_text(encoding="utf-8")):
            module = match.group(1).rsplit(".", 1)[0].replace(".", "/") + ".py"
            target = (file.parent / module).resolve()
            if root not in target.parents or not target.is_file():
                raise StudbookError(f"`!function {match.group(1)}` points outside the reviewed "
                                    f"task folder {task_dir}", file=str(file))
