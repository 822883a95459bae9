"""`studbook init`: a new studbook repository from the files this project itself uses.

The configs, lm-eval tasks, stage scripts, shared `dvc.yaml` and `params.yaml`, the set-up
scripts, ignore and attribute files, the GitHub workflows and the library itself
(`pyproject.toml`, `src/studbook/`) are copied from the studbook source tree. The library
is vendored on purpose: every stage lists the library module that holds its logic as a
DVC dependency, so the code that bred a generation is versioned beside it, and upgrading
studbook in a repository is a reviewed commit that shows which stages it re-runs. Then
git and DVC (analytics off) are initialised, a founder is proposed, and all is committed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from studbook.core.errors import StudbookError

COPIED = ("pyproject.toml", "src/studbook", "params.yaml", "dvc.yaml", ".gitignore", ".dvcignore",
          ".gitattributes", "conf", "tasks", "stages", "launch", "scripts/setup.sh", "scripts/env.sh",
          "scripts/breed.sh", ".github/workflows")  # breed and review, and the fork-safe comment
PLOTS_TEMPLATE = "src/studbook/templates/dvc_plots.html"  # .dvc/config's plots.html_template


def source_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not ((root / "pyproject.toml").is_file() and (root / "conf").is_dir() and (root / "stages").is_dir()):
        raise StudbookError("`studbook init` copies the studbook source tree's configs and stages; "
                            "install studbook from its source (pip install -e PATH)", file=str(root))
    return root


def init(path: str | Path, contract: str, model: str, train: str, data: str = "stdlib_all") -> Path:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    target = Path(path).resolve()
    if target.exists() and any(target.iterdir()):
        raise StudbookError("the directory is not empty", file=str(target))
    root = source_root()
    for option, group in ((contract, "contract"), (model, "model"), (train, "train"), (data, "data")):
        if not (root / "conf" / group / f"{option}.yaml").is_file():
            raise StudbookError(f"no {group} named '{option}'", key=f"--{group}")
    target.mkdir(parents=True, exist_ok=True)
    for item in COPIED:
        source, dest = root / item, target / item
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest)
    from importlib.metadata import version

    vendored = f"studbook {version('studbook')}"
    (target / "cards").mkdir()
    (target / "cards" / ".gitkeep").write_text("")
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    template = env.from_string((Path(__file__).parents[1] / "templates" / "README.new.md.j2").read_text())
    (target / "README.md").write_text(template.render(
        title=target.name, contract=contract, model=model, train=train, vendored=vendored))

    def run(*cmd: str) -> None:
        result = subprocess.run(cmd, cwd=target, capture_output=True, text=True)
        if result.returncode:
            raise StudbookError(f"{' '.join(cmd)} failed: {result.stderr.strip()[-500:]}", file=str(target))

    run("git", "init", "-q", "-b", "main")
    run(sys.executable, "-m", "dvc", "init", "-q")
    run(sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    # `dvc plots show` writes a page that loads nothing from the network (vega vendored)
    run(sys.executable, "-m", "dvc", "config", "plots.html_template", f"../{PLOTS_TEMPLATE}")
    import os

    from studbook.repository.proposal import propose

    here = os.getcwd()
    os.chdir(target)
    try:
        propose("founder", "scratch", [], 1234,
                {"contract": contract, "model": model, "train": train, "data": data})
        from studbook.repository.proposal import refresh_all

        refresh_all()  # the root dvc.yaml's chart: this repository's generations, not the source's
    finally:
        os.chdir(here)
    run("git", "add", "-A")
    run("git", "commit", "-qm", "studbook initialised: configs, stages, founder proposed")
    return target
