"""Breeding-search throughput (issue 14): candidates per hour, the share of a candidate's
wall time that is not training, and compute per promoted generation.

Figures come from a search's ledger (and its `--profile` breakdown when there is one):

    python bench/evolve_throughput.py --search niche-1 [--search niche-2 ...] [--json OUT]
        # searches already run in this repository (committed on evolve/NAME, or live)
    python bench/evolve_throughput.py --run [--candidates 8] [--json OUT]
        # runs a fresh `studbook evolve --profile` on the embedded default's space in a
        # scratch clone sharing this repository's DVC cache (about 20 minutes: the founder's
        # noise run re-breeds it), then reports it

The baseline each ratio is measured against is the same candidate's training loop: the
not-training share is 1 − train/wall per candidate (median), and `train_for_15_percent`
is the training length at which the measured fixed cost would be 15 % of the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import report  # the bench folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def env() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1",
                PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def search_files(repo: Path, name: str) -> tuple[list[dict], dict | None]:
    """The ledger rows and profile of search `name`: committed on evolve/NAME, else live."""
    from studbook.evolve.ledger import check_row

    def read(file: str) -> str | None:
        shown = sh(["git", "show", f"evolve/{name}:searches/{name}/{file}"], repo, check=False)
        if shown.returncode == 0:
            return shown.stdout
        live = repo / ".dvc" / "tmp" / "evolve" / name / file
        return live.read_text() if live.is_file() else None

    ledger = read("ledger.jsonl")
    if ledger is None:
        raise SystemExit(f"no search '{name}' in {repo}")
    rows = [check_row(json.loads(line), name, i) for i, line in enumerate(ledger.splitlines()) if line.strip()]
    profile = read("profile.json")
    return rows, json.loads(profile) if profile else None


def figures(name: str, rows: list[dict], profile: dict | None) -> dict:
    from studbook.evolve.ledger import summary

    s = summary(rows)
    ran = [r["timing"] for r in rows if r["kind"] == "candidate" and r["status"] in ("promoted", "rejected")
           and (r.get("timing") or {}).get("wall_seconds")]
    fixed = statistics.median(t["wall_seconds"] - t["train_seconds"] for t in ran)
    out = {
        f"{name}_candidates": s["candidates"],
        f"{name}_promoted": s["statuses"].get("promoted", 0),
        f"{name}_candidates_per_hour": s["candidates_per_hour"],
        f"{name}_not_training_share": s["not_training_share"],
        f"{name}_train_seconds_median": round(statistics.median(t["train_seconds"] for t in ran), 1),
        f"{name}_wall_seconds_median": round(statistics.median(t["wall_seconds"] for t in ran), 1),
        f"{name}_fixed_seconds_median": round(fixed, 1),
        f"{name}_train_for_15_percent": round(fixed * 0.85 / 0.15, 0),
        f"{name}_worker_seconds": s["worker_seconds"],
        f"{name}_worker_seconds_per_promoted": s["worker_seconds_per_promoted"],
        f"{name}_training_flops_per_promoted": s["training_flops_per_promoted"],
        f"{name}_noise_reused": any(r.get("reused_from") for r in rows if r["kind"] == "noise"),
    }
    for key, value in ((profile or {}).get("median") or {}).items():
        out[f"{name}_profile_{key}"] = value
    return out


def run_fresh(candidates: int) -> tuple[str, Path]:
    """A fresh search in a scratch clone sharing this repository's DVC cache."""
    scratch = Path(tempfile.mkdtemp(prefix="studbook-bench-evolve-"))
    repo = scratch / "repo"
    sh(["git", "clone", "-q", str(ROOT), str(repo)], scratch)
    cache = sh([sys.executable, "-m", "dvc", "cache", "dir"], ROOT).stdout.strip()
    sh([sys.executable, "-m", "dvc", "config", "--local", "cache.dir", cache], repo)
    sh([sys.executable, "-m", "dvc", "checkout", "-q"], repo, check=False)
    name = f"bench-{time.strftime('%Y%m%d%H%M')}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "studbook.cli", "evolve", name, "--space", "stdlib_niche",
                    "--candidates", str(candidates), "--profile"], cwd=repo, env=env(), check=True,
                   stdout=sys.stderr)
    print(f"search {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return name, repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--search", action="append", default=[], help="a search run in this repository")
    parser.add_argument("--run", action="store_true", help="run a fresh search in a scratch clone")
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    found = [(name, ROOT) for name in args.search]
    if args.run:
        found.append(run_fresh(args.candidates))
    if not found:
        parser.error("name --search NAME or --run")
    out: dict = {"searches": [name for name, _ in found]}
    for name, repo in found:
        out.update(figures(name, *search_files(repo, name)))
    report(out, args.json)


if __name__ == "__main__":
    main()
