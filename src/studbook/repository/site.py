"""A static site of the population: `studbook site OUT`.

What a team reads in a browser, from the repository alone: the lineage drawn as a graph,
the population table (sortable: click a header), scores per niche, the training curves
of every generation overlaid against the optimizer step (the `step` column of dvclive's
`generations/NAME/live/plots/metrics/**/*.tsv`), each card as a page, and each negative
result. Nothing is fetched when a page is opened: styles and the one small script are
inlined (a Content-Security-Policy of `default-src 'none'` with their hashes says so to
the browser), and the pictures are inline SVG (`site_svg`, which says why).

Pages are Jinja2 templates in `templates/site/`, rendered in the immutable sandbox with
autoescaping and StrictUndefined; cards are rendered from their Markdown by markdown-it
(CommonMark, raw HTML off: a card's text stays text). The same repository gives the same
bytes: no clock, no absolute path, every list in a fixed order. The folder is written
whole to a temporary sibling and renamed into place; an existing OUT is replaced only if
it is a studbook site, or with `replace=True`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import math
from pathlib import Path

from studbook.core.errors import StudbookError

DATA_FILES = ("templates/site/page.html.j2", "templates/site/index.html.j2", "templates/site/card.html.j2",
              "templates/site/negatives.html.j2", "templates/site/site.css", "templates/site/site.js")
TEMPLATES = Path(__file__).parents[1] / "templates" / "site"
GENERATOR = '<meta name="generator" content="studbook site">'  # how an earlier site is recognised
MAX_POINTS = 2000  # per curve: a longer log is thinned evenly (its last point kept)
UNITS = {"bits_per_byte": "bits/byte", "acc": "accuracy"}


def build(out: str | Path, replace: bool = False) -> dict:
    """Write the site of the repository in the working directory to `out`; the summary."""
    from studbook.core.atomic import atomic_dir

    out = Path(out)
    _check_out(out, replace)
    pages = render()
    with atomic_dir(out) as tmp:
        for rel, text in pages.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
    return {"site": out.as_posix(), "pages": len(pages),
            "bytes": sum(len(t.encode("utf-8")) for t in pages.values()), "index": (out / "index.html").as_posix()}


def _check_out(out: Path, replace: bool) -> None:
    target, here = out.resolve(), Path.cwd().resolve()
    if target == here or target in here.parents:
        raise StudbookError("the site's folder would replace the repository (or a folder holding it)",
                            file=str(out))
    if not target.exists() or replace:
        return
    index = target / "index.html"
    head = index.read_text(encoding="utf-8", errors="replace")[:4096] if index.is_file() else ""
    if GENERATOR not in head:
        kind = "folder" if target.is_dir() else "file"
        raise StudbookError(f"this {kind} exists and is not a studbook site; pass --replace to "
                            "replace it atomically", file=str(out))


def render() -> dict[str, str]:
    """Relative path -> page text, for the repository in the working directory."""
    from markupsafe import Markup

    from studbook.repository import lineage, population
    from studbook.repository import site_svg as svg

    cards = {c["name"]: c for c in population.members()}
    members = lineage.load()
    order = lineage.topological(members)
    rows = {r["name"]: r for r in population.table()}
    negatives = population.negative_results()
    training = training_curves(order)
    names = order + sorted({s["name"] for series in training.values() for s in series} - set(order))
    look = svg.styles(names)
    env = _environment()
    common = _assets()
    graph = lineage.as_json(members, order)
    nodes = [_node(n, cards, rows) for n in graph["nodes"]]
    missing = [n for n in nodes if n["missing"]]
    # site_svg escapes every string it writes, so its SVG goes into the pages as markup
    pages = {"index.html": env.get_template("index.html.j2").render(
        **common, up="", title="population",
        lineage=Markup(svg.lineage(missing + [n for n in nodes if not n["missing"]], graph["edges"])),
        rows=[_row(rows[n], members[n]) for n in order if n in rows],
        scores=_scores(order, cards, look),
        training=[{"metric": m, "svg": Markup(svg.curves(s, look, "optimizer step", m)),
                   "legend": [_swatch(x["name"], look) for x in s]} for m, s in training.items()],
        negatives=len(negatives), cards=[n for n in order if n in cards])}
    pages["negatives.html"] = env.get_template("negatives.html.j2").render(
        **common, up="", title="negative results",
        negatives=[{**r, "card": r["name"] in cards} for r in negatives])
    for name in order:
        if name in cards and name in rows and Path("cards", f"{name}.md").is_file():
            mine = {m: [s for s in series if s["name"] == name] for m, series in training.items()}
            pages[f"cards/{name}.html"] = env.get_template("card.html.j2").render(
                **common, up="../", title=name, member=members[name], row=_row(rows[name], members[name]),
                body=_card_html(Path("cards", f"{name}.md").read_text(encoding="utf-8")),
                training=[{"metric": m, "svg": Markup(svg.curves(s, look, "optimizer step", m))}
                          for m, s in mine.items() if s])
    return pages


def _environment():
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                         undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                         keep_trailing_newline=True)


def _assets() -> dict:
    """The inlined style sheet and script, and the policy that allows exactly them."""
    from markupsafe import Markup

    css = (TEMPLATES / "site.css").read_text(encoding="utf-8")
    js = (TEMPLATES / "site.js").read_text(encoding="utf-8")

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"
    policy = (f"default-src 'none'; style-src {digest(css)}; script-src {digest(js)}; "
              "img-src data:; base-uri 'none'; form-action 'none'")
    return {"css": Markup(css), "js": Markup(js), "policy": Markup(policy)}  # ours: no quote to escape


def _node(node: dict, cards: dict, rows: dict) -> dict:
    name = node["name"]
    if node.get("missing"):
        return {"name": name, "lines": [name, "no card"], "verdict": "", "missing": True, "best": False,
                "href": None, "title": f"{name}: {node['note']}"}
    metric = (cards.get(name) or {}).get("primary", {}).get("metric", "")
    arrived = node.get("arrived") or {}
    title = f"{name}: {node['kind']} bred by {node['method']}, {node['verdict']}"
    if arrived:
        title += f"; added in {arrived['commit'][:8]} {arrived['date'][:10]} by {arrived['author']}"
    return {"name": name, "missing": False, "verdict": node["verdict"], "best": rows.get(name, {}).get("best", False),
            "href": f"cards/{name}.html", "title": title,
            "lines": [name, f"{node['method']} · {node['kind']}",
                      f"{node['primary']:.4f} {UNITS.get(metric, metric)} · {node['verdict']}"]}


def _row(row: dict, member) -> dict:
    """A table row: each cell's text and the value it sorts by."""
    check = row["verification"]["status"]
    arrived = (member.arrived or {}).get("date", "")[:10]
    return {**row, "evidence": check if check != "tampered" else f"TAMPERED {row['verification']['field']}",
            "arrived": arrived, "unit": UNITS.get(row["primary_metric"], row["primary_metric"])}


def _swatch(name: str, look: dict) -> dict:
    return {"name": name, **look[name]}


def _scores(order: list[str], cards: dict, look: dict) -> list[dict]:
    """One chart per metric: its niches, each with every member's score (site order)."""
    from markupsafe import Markup

    from studbook.repository import site_svg as svg

    found: dict[str, dict[tuple[str, str], list]] = {}
    direction: dict[str, str] = {}
    for name in order:
        for bench in cards.get(name, {}).get("benchmarks") or []:
            if bench.get("value") is None:
                continue
            metric, niche, task = bench["metric"], bench.get("niche") or "—", bench["task"]
            direction.setdefault(metric, bench.get("direction") or "")
            title = f"{name}: {task} {metric} {bench['value']:.4f} ({bench.get('n_items', '?')} items)"
            found.setdefault(metric, {}).setdefault((niche, task), []).append((name, bench["value"], title))
    charts = []
    for metric, by_task in found.items():
        per_niche: dict[str, int] = {}
        for niche, _ in by_task:
            per_niche[niche] = per_niche.get(niche, 0) + 1
        groups = [{"niche": niche if per_niche[niche] == 1 else f"{niche} · {task}", "scores": s}
                  for (niche, task), s in sorted(by_task.items())]
        better = {"lower": " (lower is better)", "higher": " (higher is better)"}.get(direction[metric], "")
        charts.append({"metric": metric, "title": f"{metric} per niche{better}",
                       "svg": Markup(svg.scores(groups, look, metric))})
    return charts


def training_curves(order: list[str], root: str | Path = ".") -> dict[str, list[dict]]:
    """metric ('train/loss') -> [{"name": generation, "points": [(step, value), …]}], from
    every generation's dvclive logs; x is the file's `step` column. Generations in `order`
    first, then the others by name; metrics by name."""
    found: dict[str, dict[str, list]] = {}
    for tsv in sorted(Path(root, "generations").glob("*/live/plots/metrics/**/*.tsv")):
        name = tsv.relative_to(Path(root, "generations")).parts[0]
        metric = tsv.relative_to(Path(root, "generations", name, "live", "plots", "metrics")).with_suffix("")
        points = _points(tsv)
        if points:
            found.setdefault(metric.as_posix(), {})[name] = points
    rank = {n: i for i, n in enumerate(order)}
    return {metric: [{"name": n, "points": by_name[n]}
                     for n in sorted(by_name, key=lambda n: (rank.get(n, len(rank)), n))]
            for metric, by_name in sorted(found.items())}


def _points(tsv: Path) -> list[tuple[float, float]]:
    """(step, value) pairs of one dvclive TSV; rows that are not two finite numbers are skipped."""
    with open(tsv, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        fields = [f for f in reader.fieldnames or [] if f not in ("step", "timestamp")]
        if "step" not in (reader.fieldnames or []) or not fields:
            return []
        column = tsv.stem if tsv.stem in fields else fields[-1]
        points = []
        for line in reader:
            try:
                x, y = float(line["step"]), float(line[column])
            except (TypeError, ValueError):
                continue
            if math.isfinite(x) and math.isfinite(y):
                points.append((x, y))
    if len(points) > MAX_POINTS:
        stride = math.ceil(len(points) / MAX_POINTS)
        points = points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
    return points


def _card_html(text: str) -> str:
    """A card's Markdown (YAML front matter dropped: it is the Hub's metadata) as HTML."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        text = text[end + 5:] if end != -1 else text
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:  # a column's alignment as a class: the policy allows no style attribute
        align = (token.attrGet("style") or "").removeprefix("text-align:")
        if token.type in ("th_open", "td_open") and align in ("left", "right", "center"):
            token.attrs.pop("style")
            token.attrSet("class", f"align-{align}")
    return Markup(md.renderer.render(tokens, md.options, {}))
