"""Running stage bodies in-process, as `stages/KIND.py NAME` would (without DVC)."""

from __future__ import annotations

import importlib
from pathlib import Path


def run_stage(kind: str, name: str) -> dict:
    """`kind` is breed, evaluate or record; returns the stage's summary."""
    from studbook.repository.generation import resolve

    return importlib.import_module(f"studbook.stages.{kind}").run(resolve(name))


def breed_initial(name: str, out: str | Path | None = None) -> tuple[dict, Path]:
    """Only the first half of the breed stage: the method's initial weights, into `out`."""
    from studbook.repository.generation import resolve
    from studbook.stages.breed import make_initial

    out = Path(out or f"generations/{name}/initial")
    out.mkdir(parents=True, exist_ok=True)
    return make_initial(resolve(name), out), out
