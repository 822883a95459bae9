"""Drift: a re-bred member whose weights or scores differ from its committed card.

The committed card (`cards/NAME.json` at a revision, read from git objects) is the
member's identity; what is on disk now (the artifact's `studbook.json`, the evaluation's
`results.json`) is what this machine bred. A difference is reported by name — which
member, which numbers moved and by how much, and both numeric environments (the card's
and the re-bred artifact's) — never raised: lineage and card diff keep working from the
committed cards whatever is on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _numerics_line(env: dict | None, host: str | None = None) -> str:
    if not env:
        return "not recorded (bred before numerics were pinned)"
    if env.get("mode") != "pinned":
        text = f"{env.get('mode')} (not bit-reproducible across machines)"
    else:
        text = (f"pinned: ATen {env.get('cpu_capability')}, MKL_CBWR {env.get('mkl_cbwr')}, "
                f"oneDNN {env.get('onednn_max_isa')}")
    text += f", {env.get('threads')} threads, {env.get('device')}, torch {env.get('torch')}, {env.get('blas')}"
    return text + (f"; host {host}" if host else "")


def member_drift(card: dict, artifact_meta: dict | None, results: dict | None,
                 host: str | None = None) -> dict[str, Any]:
    """Compare one committed card with what is on disk. Never raises on a mismatch."""
    name = card["name"]
    report: dict[str, Any] = {"member": name, "status": "same", "moved": [],
                              "card_numerics": _numerics_line(card.get("numerics")),
                              "disk_numerics": None}
    if artifact_meta is None:
        report["status"] = "not bred here"
        return report
    report["disk_numerics"] = _numerics_line(artifact_meta.get("numerics"), host)
    if artifact_meta.get("weights_sha256") != card.get("weights_sha256"):
        report["moved"].append({"what": "weights_sha256", "card": card.get("weights_sha256"),
                                "disk": artifact_meta.get("weights_sha256")})
    if results is not None:
        for bench in card.get("benchmarks", []):
            value = results.get(bench["task"], {}).get("metrics", {}).get(bench["metric"])
            if value is None:
                continue
            if round(value, 6) != round(bench["value"], 6):
                report["moved"].append({"what": f"{bench['task']} {bench['metric']}",
                                        "card": bench["value"], "disk": round(value, 6),
                                        "delta": round(value - bench["value"], 6)})
    if report["moved"]:
        report["status"] = "drifted"
    return report


def committed_cards(rev: str = "HEAD", repo_dir: str = ".") -> dict[str, dict]:
    from studbook.repository.review import cards_at

    return cards_at(rev, repo_dir)


def drift(rev: str = "HEAD", repo_dir: str | Path = ".", names: list[str] | None = None) -> list[dict]:
    """One report per committed member (or per name asked for), against the working tree."""
    from studbook.repository.refs import artifact_dir

    root = Path(repo_dir)
    reports = []
    for name, card in sorted(committed_cards(rev, str(root)).items()):
        if names and name not in names:
            continue
        artifact = root / artifact_dir(name, card.get("kind", "model")) / "studbook.json"
        meta = json.loads(artifact.read_text(encoding="utf-8")) if artifact.is_file() else None
        results_file = root / "generations" / name / "eval" / "results.json"
        results = json.loads(results_file.read_text(encoding="utf-8"))["results"] \
            if results_file.is_file() else None
        compute = root / "generations" / name / "compute.json"
        host = json.loads(compute.read_text()).get("host") if compute.is_file() else None
        reports.append(member_drift(card, meta, results, host))
    return reports


def render(reports: list[dict]) -> str:
    lines = []
    for r in reports:
        if r["status"] != "drifted":
            lines.append(f"{r['member']}: {r['status']}")
            continue
        lines.append(f"{r['member']}: drifted — {len(r['moved'])} number(s) moved")
        if r["moved"] and all("delta" not in m for m in r["moved"]):
            lines.append("  scores: equal to the card's at its precision (6 decimals)")
        for m in r["moved"]:
            if "delta" in m:
                lines.append(f"  {m['what']}: card {m['card']:.6f}, re-bred {m['disk']:.6f} "
                             f"({m['delta']:+.6f})")
            else:
                lines.append(f"  {m['what']}: card {str(m['card'])[:12]}…, re-bred {str(m['disk'])[:12]}…")
        lines.append(f"  numerics on the card: {r['card_numerics']}")
        lines.append(f"  numerics re-bred:     {r['disk_numerics']}")
    from studbook.core.escaping import terminal

    return "\n".join(terminal(line) for line in lines) + "\n"  # card fields: untrusted
