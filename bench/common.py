"""What every benchmark ends with: `key: value` lines, and the same figures as JSON."""

from __future__ import annotations

import json
from pathlib import Path


def report(figures: dict, json_path: str | None) -> None:
    for key, value in figures.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
