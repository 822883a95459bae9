"""Evaluation cards: a pure function `render(context) -> str` over one Jinja2 template.

No I/O, no clock, no network while rendering; the template runs in Jinja's sandbox with
StrictUndefined. Figures carry fixed precision so identical results render
byte-identical and a change in one metric changes one line. `card_context` gathers the
facts (also written as the card's machine-readable JSON twin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DATA_FILES = ("templates/card.md.j2",)  # read at run time: a code dependency (core.codedeps)
TEMPLATE = Path(__file__).parents[1] / DATA_FILES[0]
from studbook.evidence import metrics


def fmt(value: float | None, metric: str = "", signed: bool = False) -> str:
    if value is None:
        return "—"
    digits = metrics.precision(metric) if metric else 4
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def directions(benchmarks: list[dict]) -> str:
    """`Lower bits per byte is better; higher accuracy is better`: each metric's direction,
    in the order the benchmarks first name it."""
    phrases: list[str] = []
    for bench in benchmarks:
        entry = metrics.lookup(bench["metric"], bench["direction"])
        label = entry.label if metrics.registered(bench["metric"]) else f"{entry.label} ({entry.unit})"
        if "," in bench["metric"] and metrics.registered(bench["metric"]):
            label += f" (filter `{bench['metric'].split(',', 1)[1]}`)"
        phrase = f"{bench['direction']} {label} is better"
        if phrase not in phrases:
            phrases.append(phrase)
    text = "; ".join(phrases)
    return text[:1].upper() + text[1:]


def fmt_si(value: float) -> str:
    """3 significant figures with an SI prefix (FLOPs, tokens)."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{value:.3g} "


def card_context(meta: dict, results: dict, verdict: dict, contract,
                 relation: str | None, evidence: dict | None = None,
                 license: dict | None = None) -> dict[str, Any]:
    """Every fact the card shows, as plain data (the JSON twin). `license`: the Hub's
    license keys (`licenses.License.front_matter`); none given, `unknown`."""
    benchmarks = []
    for bench in contract.benchmarks:
        value = results[bench.task]["metrics"][bench.metric]
        against = []
        for parent, values in sorted(verdict["parent_benchmarks"].items()):
            parent_value = values.get(bench.task)
            delta = None if parent_value is None else value - parent_value
            against.append({"parent": parent, "value": parent_value, "delta": delta})
        benchmarks.append({
            "task": bench.task, "niche": bench.niche, "metric": bench.metric,
            "direction": bench.direction, "unit": metrics.lookup(bench.metric).unit,
            "value": round(value, 6), "n_items": results[bench.task]["items"],
            "task_version": results[bench.task]["version"],
            "task_sha256": results[bench.task]["task_sha256"], "parents": against,
        })
    parents = meta["parents"] or [{"name": verdict["reference_parent"], "sha256": None,
                                   "reference": True}]
    model_index = [{"name": meta["name"], "results": [{
        "task": {"type": "text-generation", "name": "Text Generation"},
        "dataset": {"name": b["task"], "type": b["task"]},
        "metrics": [{"type": b["metric"], "value": round(b["value"], metrics.precision(b["metric"])),
                     "name": f"{b['metric']} ({b['niche']})"}],
    } for b in benchmarks]}]
    evidence = evidence or {}
    front = hub_front_matter(meta, relation, evidence.get("relation"), license)
    front["model-index"] = model_index
    # seconds stay out of the front matter: a re-breed then changes one line of the card
    steady_compute = {k: v for k, v in meta["compute"].items() if k not in ("seconds", "host", "target")}
    if "target" in meta["compute"]:
        steady_compute["target"] = {k: v for k, v in meta["compute"]["target"].items() if k != "curve"}
    front["studbook"] = {
        "generation": meta["name"], "kind": meta["kind"], "method": meta["method"],
        "verdict": verdict["verdict"],
        "parents": [{k: p.get(k) for k in ("name", "sha256")} for p in parents],
        "weights_sha256": meta["weights_sha256"], "recipe_sha256": meta["recipe_sha256"],
        "contract": meta["contract"], "tokenizer_sha256": meta["tokenizer_sha256"],
        "data": meta["data"], "versions": meta["versions"], "compute": steady_compute,
        "relation": evidence.get("relation"), "numerics": meta.get("numerics"),
    }
    for key in ("teacher", "base"):
        if key in meta:
            front["studbook"][key] = {k: meta[key][k] for k in ("name", "sha256")}
    retained = evidence.get("retention")
    if retained:
        retained = {"count": retained["items"],
                    "child": _rounded(retained["child"]),
                    "parents": {k: _rounded(v) for k, v in sorted(retained["parents"].items())}}
    return {
        "name": meta["name"], "kind": meta["kind"], "method": meta["method"],
        "relation": relation, "verdict": verdict["verdict"], "reasons": verdict["reasons"],
        "parents": parents, "reference_parent": verdict["reference_parent"],
        "contract": meta["contract"], "contract_description": contract.description.strip(),
        "architecture": meta["architecture"], "parameters": meta["parameters"],
        "seed": meta["seed"], "recipe_sha256": meta["recipe_sha256"],
        "weights_sha256": meta["weights_sha256"], "tokenizer_sha256": meta["tokenizer_sha256"],
        "data": meta["data"],  # the corpus it trained on, as its artifact records it (None: untrained)
        "versions": meta["versions"], "compute": meta["compute"],
        "benchmarks": benchmarks, "primary": verdict["primary"], "guards": verdict["guards"],
        "studbook_relation": evidence.get("relation"),
        "teacher": meta.get("teacher"), "base": meta.get("base"),
        "total_parameters": meta.get("total_parameters", meta["parameters"]),
        "retention": retained or None, "hard_examples": evidence.get("hard_examples"),
        "target": meta["compute"].get("target"), "compounding": evidence.get("compounding"),
        "numerics": meta.get("numerics"),
        **({"selection": verdict["selection"]} if "selection" in verdict else {}),  # a search's
        "extraction": extraction(meta, verdict["primary"]),
        "front_matter": front,
    }


def hub_front_matter(meta: dict, relation: str | None, own_relation: str | None,
                     license: dict | None) -> dict[str, Any]:
    """The Hugging Face card keys: `library_name` (`peft` loads an adapter, `transformers` a
    model), `pipeline_tag`, the license, and `base_model` with the Hub's `base_model_relation`
    (adapter, merge, finetune; never set without a base model). An adapter's base model is
    the model it applies to (an adapter merge's parents are adapters, an extracted LoRA's
    are the full child and its base): its parents stay in `studbook.parents`. Names here are
    the studbook's members; `studbook publish` maps them to Hub ids. Where the Hub's
    vocabulary is coarser than studbook's (a distilled student is a `finetune` of its teacher
    to the Hub), studbook's relation is a tag too, and the `studbook` block keeps it."""
    adapter = meta["kind"] == "adapter"
    front: dict[str, Any] = {"library_name": "peft" if adapter else "transformers",
                             "pipeline_tag": "text-generation",
                             **(license or {"license": "unknown"})}
    tags = ["studbook", meta["contract"]]
    bases = [meta["base"]["name"]] if adapter and meta.get("base") else [p["name"] for p in meta["parents"]]
    if bases:
        front["base_model"] = bases
        if relation:
            front["base_model_relation"] = relation
        if own_relation and own_relation != relation:
            tags.append(own_relation)
    front["tags"] = tags
    return front


def extraction(meta: dict, primary: dict) -> dict[str, Any] | None:
    """A child stored as a LoRA of its parent (`extract_lora`): what it costs (bytes against
    the full child's) and what it keeps (the share of the full child's gain over the parent
    on the primary metric that the adapter still has: 100 % = all of it)."""
    facts = (meta.get("breed") or {}).get("facts") or {}
    if "size_ratio" not in facts or "child" not in facts or "base" not in facts:
        return None
    full, parent = facts["child"]["name"], facts["base"]["name"]
    scores = primary["parents"]
    kept = None
    if full in scores and parent in scores and scores[full] != scores[parent]:
        kept = (primary["child"] - scores[parent]) / (scores[full] - scores[parent])
    return {"full": full, "parent": parent, "rank": facts["rank"], "smallest_rank": facts.get("smallest_rank"),
            "decomposed": facts["decomposed_modules"], "full_rank_modules": int(facts.get("full_rank_modules") or 0),
            "adapter_bytes": facts["adapter_bytes"], "full_bytes": facts["full_bytes"],
            "size_ratio": facts["size_ratio"], "discarded_energy": facts["discarded_energy"],
            "gain_kept": kept, "full_score": scores.get(full), "parent_score": scores.get(parent)}


def compounding(child: dict, scratch_name: str, scratch: dict) -> dict[str, Any]:
    """Compute-to-target of a child vs a from-scratch model trained to the same target.

    `child` and `scratch` are the `compute` blocks of the two artifacts (with wall seconds).
    When the scratch model never reached the target, its whole budget is a lower bound on
    what it needs, so the ratio is an upper bound (`bound: "at most"`).
    """
    mine, theirs = child["target"], scratch["target"]
    row = {"target": {k: mine[k] for k in ("task", "bits_per_byte", "every", "items")},
           "child": {"reached": mine["reached"], "steps": mine["steps"], "tokens": mine["tokens"],
                     "seconds": child.get("seconds"), "flops": child["flops"]},
           "scratch": {"name": scratch_name, "reached": theirs["reached"],
                       "steps": theirs["steps"] if theirs["reached"] else scratch["steps"],
                       "tokens": theirs["tokens"] if theirs["reached"] else scratch["tokens"],
                       "seconds": scratch.get("seconds"), "flops": scratch["flops"]},
           "token_ratio": None, "seconds_ratio": None, "bound": None}
    if mine["reached"]:
        row["token_ratio"] = round(mine["tokens"] / row["scratch"]["tokens"], 6)
        if child.get("seconds") and scratch.get("seconds"):
            row["seconds_ratio"] = round(child["seconds"] / scratch["seconds"], 6)
        row["bound"] = "exact" if theirs["reached"] else "at most"
    return row


def _rounded(score: dict | None) -> dict | None:
    return None if score is None else {"count": score["items"],
                                       "bits_per_byte": round(score["bits_per_byte"], 6)}


def _to_yaml(data: Any):
    from markupsafe import Markup

    # the front matter is YAML, written by safe_dump (which quotes what it must); it is not
    # Markdown, so it is the one output `markdown_text` leaves alone
    return Markup(yaml.safe_dump(data, sort_keys=True, allow_unicode=True, width=100).rstrip("\n"))


def markdown_text(value: Any) -> Any:
    """Every value a card interpolates, as inert Markdown text (`core.escaping.markdown`:
    no HTML, no link, no table-cell break, one line); the YAML front matter (Markup) and
    numbers pass as they are. Plain names are unchanged, so ordinary cards keep their bytes."""
    from markupsafe import Markup

    from studbook.core.escaping import markdown

    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return markdown(value)


def render_card(context: dict[str, Any], template: str | None = None) -> str:
    """Render a card. Pure: the same context always gives the same bytes."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True,
                                        trim_blocks=True, lstrip_blocks=True, autoescape=False,
                                        finalize=markdown_text)
    env.filters.update(fmt=fmt, si=fmt_si, to_yaml=_to_yaml, directions=directions)
    source = template if template is not None else TEMPLATE.read_text(encoding="utf-8")
    text = env.from_string(source).render(**context)
    return text.rstrip("\n") + "\n"
