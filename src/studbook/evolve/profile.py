"""Where a candidate's wall time went (`studbook evolve --profile`).

`profiling/sitecustomize.py` leaves one JSON file per Python process the workers started
(argv, start, end, seconds of top-level imports). Joined with the ledger's rows, each
finished candidate's wall time splits into:

- `train`: the training loop alone (the breed stage's compute.json, as the ledger has it);
- `imports`: top-level imports of its three stage processes;
- `evaluate`: the evaluate process, its imports apart;
- `other`: the breed and record processes apart from their imports and the training loop
  (interpreter start-up, recipe resolution, model load and save, record);
- `dvc`: the rest of the wall time: queue pick-up, the executor's temporary clone and
  checkout, stage checks, lock, experiment commit and clean-up.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

STAGES = ("breed", "evaluate", "record")
PARTS = ("train", "imports", "evaluate", "other", "dvc")


def processes(folder: str | Path) -> list[dict]:
    out = []
    for file in sorted(Path(folder).glob("*.json")):
        try:
            out.append(json.loads(file.read_text()))
        except (OSError, ValueError):
            continue  # a process killed while writing: its line is simply missing
    return out


def _stage(process: dict) -> tuple[str, str] | None:
    argv = process.get("argv") or []
    if len(argv) >= 2 and Path(argv[0]).parent.name == "stages" and Path(argv[0]).stem in STAGES:
        return Path(argv[0]).stem, argv[1]
    return None


def breakdown(rows: list[dict], folder: str | Path) -> dict[str, dict]:
    """candidate name -> seconds per part (and `wall`), for candidates that ran to the end
    with all three stage processes seen inside their wall-time window."""
    procs = [(s, p) for p in processes(folder) if (s := _stage(p))]
    out = {}
    for row in rows:
        timing = row.get("timing") or {}
        if row["kind"] != "candidate" or not timing.get("wall_seconds") or "train_seconds" not in timing:
            continue
        mine = {stage: p for (stage, name), p in procs if name == row["name"]
                and timing["started"] - 5 <= p["started"] <= timing["finished"] + 5}
        if set(mine) != set(STAGES):
            continue
        imports = {s: p["import_seconds"] for s, p in mine.items()}
        walls = {s: p["ended"] - p["started"] for s, p in mine.items()}
        train = timing["train_seconds"]
        out[row["name"]] = {
            "wall": timing["wall_seconds"], "train": train, "imports": sum(imports.values()),
            "evaluate": walls["evaluate"] - imports["evaluate"],
            "other": walls["breed"] + walls["record"] - imports["breed"] - imports["record"] - train,
            "dvc": timing["wall_seconds"] - sum(walls.values()),
        }
    return out


def medians(parts: dict[str, dict]) -> dict[str, float]:
    """Median seconds per part over the candidates, and each part's median share of wall."""
    if not parts:
        return {}
    out = {f"{k}_seconds": round(statistics.median(p[k] for p in parts.values()), 2) for k in ("wall",) + PARTS}
    out.update({f"{k}_share": round(statistics.median(p[k] / p["wall"] for p in parts.values()), 3) for k in PARTS})
    return out
