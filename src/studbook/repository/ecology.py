"""The demo ecology: a whole seed population bred in a throwaway clone, one commit each.

`studbook demo` clones the repository (HEAD), shares the DVC cache of the original so
anything already bred is restored rather than recomputed, then for each generation of
`conf/ecology/NAME.yaml`: propose (unless the clone already has it), `dvc repro` its
dvc.yaml, and commit recipe, lock, card and evidence. It ends with the population.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studbook.core.config import load_yaml, validate


class EcologyMember(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    method: str
    parents: list[str] | str = Field(default_factory=list, description="names, or 'auto'")
    parameters: dict[str, Any] = Field(default_factory=dict)
    choices: dict[str, str]
    seed: int = 1234
    scratch_reference: str | None = Field(default=None, description=(
        "a from-scratch member trained to the same target (compute-to-target on the card)"))


class Ecology(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    generations: list[EcologyMember] = Field(min_length=1)


def load_ecology(file: str | Path) -> Ecology:
    return validate(Ecology, load_yaml(file), file=str(file))


def _run(cmd: list[str], cwd: Path, log) -> str:
    log(f"$ {' '.join(cmd)}")
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def build(ecology_file: str | Path, clone_dir: str | Path, source: str | Path = ".",
          log=print) -> list[dict]:
    """Breed every generation of the ecology in a clone of `source`; return the timings."""
    source, clone = Path(source).resolve(), Path(clone_dir).resolve()
    ecology = load_ecology(source / ecology_file)
    python = sys.executable
    if not clone.exists():
        _run(["git", "clone", "--quiet", str(source), str(clone)], source, log)
        _run([python, "-m", "dvc", "cache", "dir", "--local", str(source / ".dvc" / "cache")], clone, log)
        for key, value in (("user.email", "demo@studbook.invalid"), ("user.name", "studbook demo")):
            subprocess.run(["git", "config", key, value], cwd=clone, check=True)
    timings = []
    for member in ecology.generations:
        start = time.perf_counter()
        if not (clone / "generations" / member.name).exists():
            import yaml

            cmd = [python, "-m", "studbook.cli", "propose", member.name, "--method", member.method,
                   "--seed", str(member.seed)]
            parents = member.parents if isinstance(member.parents, str) else ",".join(member.parents)
            if parents:
                cmd += ["--parents", parents]
            for group, option in member.choices.items():
                cmd += [f"--{group}", option]
            if member.parameters:
                cmd += ["--parameters", yaml.safe_dump(member.parameters, default_flow_style=True)]
            if member.scratch_reference:
                cmd += ["--scratch-reference", member.scratch_reference]
            _run(cmd, clone, log)
        out = _run([python, "-m", "dvc", "repro", f"generations/{member.name}/dvc.yaml"], clone, log)
        summary = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in out.splitlines()
                   if ": " in line and line.split(": ", 1)[0] in ("verdict", "net_gain")}
        _run(["git", "add", "-A"], clone, log)
        status = subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=clone)
        if status.returncode:
            _run(["git", "commit", "--quiet", "-m",
                  f"{member.name}: {member.method} generation, {summary.get('verdict', 'unchanged')}"],
                 clone, log)
        seconds = time.perf_counter() - start
        log(f"generation: {member.name} verdict: {summary.get('verdict', 'up to date')} "
            f"seconds: {seconds:.0f}")
        timings.append({"name": member.name, "seconds": round(seconds, 1), **summary})
    return timings
