"""The population, read from the repository itself: every card's JSON twin.

Promoted members and rejected children (negative results) are both kept and both
queryable; nothing lives in a side database.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import StudbookError


def members(cards_dir: str | Path = "cards") -> list[dict]:
    out = []
    for file in sorted(Path(cards_dir).glob("*.json")):
        out.append(json.loads(file.read_text(encoding="utf-8")))
    return out


def member(name: str, cards_dir: str | Path = "cards") -> dict:
    file = Path(cards_dir) / f"{name}.json"
    if not file.is_file():
        known = ", ".join(m["name"] for m in members(cards_dir)) or "none"
        raise StudbookError(f"no member named '{name}' (known: {known})", file=str(file))
    return json.loads(file.read_text(encoding="utf-8"))


def row(m: dict) -> dict:
    scores = {b["task"]: b["value"] for b in m["benchmarks"]}
    return {
        "name": m["name"], "kind": m["kind"], "method": m["method"], "verdict": m["verdict"],
        "parents": [p["name"] for p in m["parents"]],
        "primary": round(m["primary"]["child"], 4), "primary_metric": m["primary"]["metric"],
        "net_gain": round(m["primary"]["net_gain"]["mean"], 4),
        "parameters": m["parameters"], "tokens": m["compute"]["tokens"],
        "seconds": m["compute"]["seconds"], "scores": scores,
    }
