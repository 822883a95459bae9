"""The ledger of a search: one line per candidate, every one kept, whatever became of it.

`searches/SEARCH/ledger.jsonl` is committed: one JSON object per line, sorted by (kind,
trial), keys sorted, floats rounded to 6 decimals, and rewritten whole and atomically on
every change. A change to one candidate therefore changes one line of the diff. A pull
request may edit the file, so it is read back with the bounded JSON reader used for card
twins. The figures a search is judged by are derived here from the rows: candidates per
hour, the share of a candidate's wall time that is not training, and the compute spent per
promoted generation.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from studbook.core.errors import StudbookError

IN_FLIGHT = ("proposed", "queued", "running", "killing")
TRANSIENT = IN_FLIGHT + ("selected",)  # selected: passed the selection gate, awaiting confirmation
FINAL = ("promoted", "rejected", "crashed", "timed-out", "invalid")
KINDS = ("candidate", "noise")
MAX_LEDGER_BYTES = 64 << 20  # a few hundred rows of a few kB


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _line(row: dict) -> str:
    return json.dumps(_rounded(row), sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def check_row(row: Any, file: str, index: int) -> dict:
    """A row's identity and status are what the ledger's readers rely on."""
    key = f"[{index}]"
    if not isinstance(row, dict):
        raise StudbookError("a ledger row is a JSON object", file=file, key=key)
    if row.get("kind") not in KINDS:
        raise StudbookError(f"kind {row.get('kind')!r} is not one of {', '.join(KINDS)}", file=file, key=f"{key}.kind")
    if not isinstance(row.get("trial"), int) or isinstance(row.get("trial"), bool) or row["trial"] < 0:
        raise StudbookError("trial is a trial number", file=file, key=f"{key}.trial")
    statuses = TRANSIENT + FINAL + (("measured",) if row["kind"] == "noise" else ())
    if row.get("status") not in statuses:
        raise StudbookError(f"status {row.get('status')!r} is not one of {', '.join(statuses)}",
                            file=file, key=f"{key}.status")
    return row


def read_ledger(path: str | Path) -> list[dict]:
    """Every row of a ledger (none if the file does not exist yet)."""
    from studbook.repository.card_files import load_json

    path = Path(path)
    if not path.is_file():
        return []
    if path.stat().st_size > MAX_LEDGER_BYTES:
        raise StudbookError(f"larger than a ledger may be ({MAX_LEDGER_BYTES:,} bytes)", file=str(path))
    rows = []
    for index, text in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if text.strip():
            rows.append(check_row(load_json(text, f"{path}:{index + 1}", what="ledger row"), str(path), index))
    return rows


def write_ledger(path: str | Path, rows: list[dict]) -> None:
    """All rows, canonical and sorted, written atomically (a reader never sees half)."""
    from studbook.core.atomic import write_text_atomic

    ordered = sorted(rows, key=lambda r: (KINDS.index(r["kind"]), r["trial"]))
    write_text_atomic(path, "".join(_line(r) + "\n" for r in ordered))


def upsert(path: str | Path, row: dict) -> list[dict]:
    """Record `row` (replacing the row of the same kind and trial); returns every row."""
    check_row(row, str(path), 0)
    rows = [r for r in read_ledger(path) if (r["kind"], r["trial"]) != (row["kind"], row["trial"])]
    rows.append(row)
    write_ledger(path, rows)
    return rows


def summary(rows: list[dict]) -> dict:
    """The figures a search is judged by, from its rows (times in seconds since the epoch).

    candidates_per_hour: finished candidates (any final status but invalid) over the time
    from the first start to the last finish; not_training_share: 1 - train/wall, median
    over the candidates that ran to the end; per promoted generation, the worker seconds
    and training FLOPs the whole search spent (noise runs included, unless reused from
    another search: those cost this one nothing).
    """
    candidates = [r for r in rows if r["kind"] == "candidate"]
    finished = [r for r in candidates if r["status"] in FINAL and r["status"] != "invalid"]
    timed = [r["timing"] for r in rows if isinstance(r.get("timing"), dict) and r["timing"].get("finished")
             and r["timing"].get("started") is not None]
    span = (max(t["finished"] for t in timed) - min(t["started"] for t in timed)) if timed else 0.0
    shares = [1 - r["timing"]["train_seconds"] / r["timing"]["wall_seconds"] for r in finished
              if r["status"] in ("promoted", "rejected") and r.get("timing", {}).get("wall_seconds")]
    promoted = sum(1 for r in candidates if r["status"] == "promoted")
    worker_seconds = sum(t.get("wall_seconds", 0.0) for t in timed)
    flops = sum((r.get("compute") or {}).get("flops", 0.0) for r in rows if not r.get("reused_from"))
    return {
        "candidates": len(candidates),
        "finished": len(finished),
        "statuses": {s: sum(1 for r in candidates if r["status"] == s) for s in FINAL + TRANSIENT
                     if any(r["status"] == s for r in candidates)},
        "candidates_per_hour": round(len(finished) / span * 3600, 2) if span > 0 else None,
        "not_training_share": round(statistics.median(shares), 3) if shares else None,
        "worker_seconds": round(worker_seconds, 1),
        "worker_seconds_per_promoted": round(worker_seconds / promoted, 1) if promoted else None,
        "training_flops_per_promoted": flops / promoted if promoted else None,
    }


def negatives(rows: list[dict], search: str) -> list[dict]:
    """The candidates a search did not promote, as `studbook negatives` lists members."""
    return [{"name": r.get("name", f"{search}-{r['trial']:03d}"), "method": r.get("operator"),
             "parents": r.get("parents", []), "reference_parent": r.get("reference_parent"),
             "reasons": (r.get("selection") or {}).get("reasons") or ([r["error"]] if r.get("error") else []),
             "net_gain": (r.get("selection") or {}).get("net_gain"), "status": r["status"], "search": search}
            for r in rows if r["kind"] == "candidate" and r["status"] in FINAL and r["status"] != "promoted"]


def ledgers(root: str | Path = ".") -> dict[str, Path]:
    """search name -> ledger, for every search under `searches/` (committed) and every
    search this workspace is running or ran (`.dvc/tmp/evolve/*/ledger.jsonl`, live)."""
    live = {p.parent.name: p for p in sorted(Path(root, ".dvc", "tmp", "evolve").glob("*/ledger.jsonl"))}
    return {**live, **{p.parent.name: p for p in sorted(Path(root, "searches").glob("*/ledger.jsonl"))}}


def _interval(block: dict | None, key: str = "net_gain") -> str:
    if not block or block.get(key if key in block else "mean") is None:
        return "—"
    mean = block.get(key, block.get("mean"))
    return f"{mean:+.4f} [{block['ci_low']:+.4f}, {block['ci_high']:+.4f}]"


def markdown(search: str, rows: list[dict]) -> str:
    """searches/SEARCH/README.md: every candidate in one table and the search's figures.
    A pure function of the rows (byte-identical for identical rows); every value escaped."""
    from studbook.core.escaping import markdown as md

    lines = [f"# Search {md(search)}", "",
             "Every candidate this search bred, whatever became of it (`studbook candidates "
             f"{md(search)}`). Gains are the primary metric's mean paired gain over the reference "
             "parent (positive is better) with 95 % intervals; selection gains are on the "
             "selection items only, confirmation gains on the items never used to select.", "",
             "| trial | candidate | operator | parameters | status | selection gain | confirmation gain "
             "| noise floor | training s | wall s | not training |",
             "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        timing = r.get("timing") or {}
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted((r.get("params") or {}).items()) if k != "operator")
        if r["kind"] == "noise":
            params = f"{r['noise'].get('rebred', r['noise']['parent'])} seed {r['noise']['seed']}" + (
                f" (measured by search {r['reused_from']})" if r.get("reused_from") else "")
        confirmation = r.get("confirmation")
        share = timing.get("not_training_share")
        lines.append("| " + " | ".join([
            str(r["trial"]) if r["kind"] == "candidate" else "noise", md(r.get("name", "")),
            md(r.get("operator") or "re-breed"), md(params) or "—", md(r["status"]),
            _interval(r.get("selection")), _interval(confirmation, "mean"),
            f"{confirmation['noise_floor']:.4f}" if confirmation else "—",
            f"{timing['train_seconds']:.1f}" if "train_seconds" in timing else "—",
            f"{timing['wall_seconds']:.1f}" if "wall_seconds" in timing else "—",
            f"{share:.1%}" if share is not None else "—"]) + " |")
    lines += ["", "## Figures", ""]
    for key, value in summary(rows).items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float) and value > 1e6:
            value = f"{value:.3e}"
        lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"
