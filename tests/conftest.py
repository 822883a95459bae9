"""Shared fixtures: offline environment, and a scratch studbook repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
for _key, _value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                     "TRANSFORMERS_OFFLINE": "1", "DVC_NO_ANALYTICS": "1",
                     "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ[_key] = _value

# What a new studbook repository starts from: code, configs, tasks; no population.
SKELETON = ("pyproject.toml", "params.yaml", "dvc.yaml", ".gitignore", ".dvcignore",
            "conf", "tasks", "stages", "src/studbook")


def copy_skeleton(dest: Path) -> Path:
    for item in SKELETON:
        source = ROOT / item
        target = dest / item
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (dest / "cards").mkdir(exist_ok=True)
    return dest


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def git_dvc_init(repo: Path) -> None:
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["git", "config", "user.email", "test@studbook.invalid"], repo)
    run(["git", "config", "user.name", "studbook test"], repo)
    run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "studbook skeleton"], repo)


def bred_pico(dest: Path) -> tuple[Path, str]:
    """A repository with the pico founder bred and committed; also the repro's output."""
    repo = copy_skeleton(dest)
    git_dvc_init(repo)
    run([sys.executable, "-m", "studbook.cli", "propose", "pico", "--model", "llama_pico", "--train", "pico",
         "--contract", "stdlib_pico"], repo)
    result = run([sys.executable, "-m", "dvc", "repro", "generations/pico/dvc.yaml"], repo, timeout=900)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pico bred"], repo)
    return repo, result.stdout + result.stderr


@pytest.fixture
def skeleton(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repository's code and configs, as the working directory."""
    repo = copy_skeleton(tmp_path / "repo")
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """The real corpus and benchmarks (the two shared stages, run once for the module)."""
    root = copy_skeleton(tmp_path_factory.mktemp("prepared"))
    for stage in ("prepare_data.py stdlib", "build_benchmarks.py"):
        run([sys.executable, *f"stages/{stage}".split()], root)
    return root / "data"


@pytest.fixture
def studbook(skeleton: Path, prepared: Path) -> Path:
    """A skeleton with the real corpus and benchmarks, as the working directory."""
    shutil.copytree(prepared, skeleton / "data")
    return skeleton
