"""An evaluation's record on disk: `results.json` plus one per-item JSONL log per task.

Written once by the evaluate stage (atomically), read by the gate, harvest, cards and by
children that replay their parents' successes; kept apart from `evaluation`, which runs
lm-eval, so code that only reads scores does not depend on how they were computed.
"""

from __future__ import annotations

import json
from pathlib import Path

from studbook.core.atomic import atomic_dir, canonical_json


def write_evaluation(evaluation: dict, out_dir: str | Path) -> None:
    """results.json plus one per-sample JSONL log per task, written atomically."""
    with atomic_dir(out_dir) as tmp:
        summary = {k: v for k, v in evaluation.items() if k != "samples"}
        (tmp / "results.json").write_text(canonical_json(summary), encoding="utf-8")
        (tmp / "samples").mkdir()
        for task, rows in evaluation["samples"].items():
            with open(tmp / "samples" / f"{task}.jsonl", "w", encoding="utf-8") as handle:
                for row in rows:
                    handle.write(json.dumps(row, sort_keys=True) + "\n")


def read_evaluation(eval_dir: str | Path, samples: bool = True) -> dict:
    """results.json, plus the per-item logs unless `samples` is False."""
    eval_dir = Path(eval_dir)
    summary = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    if not samples:
        return summary
    logs = {}
    for file in sorted((eval_dir / "samples").glob("*.jsonl")):
        with open(file, encoding="utf-8") as handle:
            logs[file.stem] = [json.loads(line) for line in handle]
    summary["samples"] = logs
    return summary
