"""The population site's pictures, drawn here as inline SVG: the lineage graph, curves
overlaid on one pair of axes, and scores per niche.

Why SVG written in Python rather than vega-lite with vega, vega-lite and vega-embed
vendored (~1 MB of JavaScript): the site must be byte-identical for the same repository,
and a chart laid out here is — a chart laid out by a script at load time is only as stable
as that script's version; the pictures read with scripts off (a mail attachment, a CI
artifact, a page on a static host); the DOM says what is drawn (`g.node` per member,
`path.curve` per generation), so a browser test checks the picture itself; and the three
kinds of chart needed here are a few dozen lines each, with no vendored library to track.

Every string that reaches the SVG goes through `_esc` (names and methods come from cards,
which pull requests may contain); numbers are formatted with fixed precision so the same
figures give the same bytes.
"""

from __future__ import annotations

import html
import math

# Tableau 10: distinguishable, colour-blind-aware; after ten, the colours repeat dashed
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
DASHES = ("", "6 3", "2 2")


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: float) -> str:
    """A coordinate: one decimal (0.1 px), never '-0.0'."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def styles(names: list[str]) -> dict[str, dict]:
    """name -> {"color", "dash"}: one look per generation, the same on every chart."""
    return {name: {"color": PALETTE[i % len(PALETTE)], "dash": DASHES[(i // len(PALETTE)) % len(DASHES)]}
            for i, name in enumerate(names)}


def ticks(low: float, high: float, count: int = 5, whole: bool = False) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart; at
    least 1 apart if `whole`, for counts such as optimizer steps)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        low, high = low - (abs(low) * 0.05 or 0.5), high + (abs(high) * 0.05 or 0.5)
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(step, 1) if whole else step
    first = math.floor(low / step) * step
    values, value = [], first
    while value < high + step * 0.999:
        values.append(round(value, 12))
        value += step
    return values


def _label(value: float) -> str:
    """A tick's text: whole numbers in full (optimizer steps), others to 4 significant digits."""
    return f"{value + 0.0:.0f}" if value == int(value) and abs(value) < 1e12 else f"{value:.4g}"


# --- the lineage ---------------------------------------------------------------------

NODE_H, GAP_X, GAP_Y, MARGIN = 58, 28, 46, 16
LANE = 12  # the width of a waypoint: where an edge that skips a layer crosses it


def _layers(names: list[str], parents: dict[str, list[str]]) -> tuple[list[list[str]], dict[str, list[str]]]:
    """Layers (longest path from a root; `names` come parents first) with a waypoint in
    every layer an edge skips, so no edge runs under a box it does not join (Sugiyama's
    dummy nodes); within a layer, sweeps down and up order nodes by the mean position of
    their parents, then children (ties: the order before). Returns the layers and each edge's waypoints."""
    depth: dict[str, int] = {}
    for name in names:
        depth[name] = 1 + max((depth[p] for p in parents.get(name, []) if p in depth), default=-1)
    layers: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
    for name in names:
        layers[depth[name]].append(name)
    above: dict[str, list[str]] = {}  # a node's (or waypoint's) parents one layer up
    ways: dict[str, list[str]] = {}
    for child in names:
        for parent in parents.get(child, []):
            chain = [f"\0{parent}\0{child}\0{d}" for d in range(depth[parent] + 1, depth[child])]
            ways[f"{parent}\0{child}"] = chain
            for d, point in zip(range(depth[parent] + 1, depth[child]), chain):
                layers[d].append(point)
            for upper, lower in zip([parent] + chain, chain + [child]):
                above.setdefault(lower, []).append(upper)
    below: dict[str, list[str]] = {}
    for lower, ups in above.items():
        for upper in ups:
            below.setdefault(upper, []).append(lower)

    def sweep(fixed: list[str], layer: list[str], links: dict[str, list[str]]) -> None:
        where = {n: i for i, n in enumerate(fixed)}
        given = {n: i for i, n in enumerate(layer)}

        def centre(name: str) -> tuple[float, int]:
            linked = [where[p] for p in links.get(name, []) if p in where]
            return (sum(linked) / len(linked) if linked else given[name], given[name])
        layer.sort(key=centre)
    for _ in range(2):  # down by parents, up by children, and down again
        for upper, layer in zip(layers, layers[1:]):
            sweep(upper, layer, above)
        for lower, layer in zip(layers[::-1], layers[-2::-1]):
            sweep(lower, layer, below)
    for upper, layer in zip(layers, layers[1:]):
        sweep(upper, layer, above)
    return layers, ways


def lineage(nodes: list[dict], edges: list[dict]) -> str:
    """The family tree, top down. `nodes`: {"name", "lines" (2–3 text lines), "verdict",
    "missing" (a parent without a card), "best", "href" (or None), "title"} in topological
    order; `edges`: {"parent", "child", "missing"}."""
    if not nodes:
        return '<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="320" height="40">' \
               '<text x="8" y="24">no members yet</text></svg>'
    parents: dict[str, list[str]] = {}
    for edge in edges:
        parents.setdefault(edge["child"], []).append(edge["parent"])
    layers, ways = _layers([n["name"] for n in nodes], parents)
    longest = max(len(line) for n in nodes for line in n["lines"])
    width = max(150, 7 * longest + 24)  # ~7 px per character at 12 px

    def size(name: str) -> float:
        return LANE if name.startswith("\0") else width

    spans = [sum(size(n) for n in layer) + (len(layer) - 1) * GAP_X for layer in layers]
    total_w = 2 * MARGIN + max(spans)
    total_h = 2 * MARGIN + len(layers) * NODE_H + (len(layers) - 1) * GAP_Y
    centre: dict[str, tuple[float, float]] = {}  # name -> (x of its centre, y of its top)
    for row, (layer, span) in enumerate(zip(layers, spans)):
        x = (total_w - span) / 2
        for name in layer:
            centre[name] = (x + size(name) / 2, MARGIN + row * (NODE_H + GAP_Y))
            x += size(name) + GAP_X
    out = [f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{_n(total_w)}" '
           f'height="{_n(total_h)}" viewBox="0 0 {_n(total_w)} {_n(total_h)}" role="img" '
           'aria-label="lineage graph">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" fill="#667"/></marker></defs>']
    bend = GAP_Y / 2 + 8
    for edge in edges:
        px, py = centre[edge["parent"]]
        d = f"M{_n(px)} {_n(py + NODE_H)}"
        for point in ways[f'{edge["parent"]}\0{edge["child"]}']:  # through the gap it was given
            x, y = centre[point]
            d += f"C{_n(px)} {_n(py + NODE_H + bend)} {_n(x)} {_n(y - bend)} {_n(x)} {_n(y)}L{_n(x)} {_n(y + NODE_H)}"
            px, py = x, y
        x, y = centre[edge["child"]]
        d += f"C{_n(px)} {_n(py + NODE_H + bend)} {_n(x)} {_n(y - bend)} {_n(x)} {_n(y - 1)}"
        kind = " missing" if edge.get("missing") else ""
        out.append(f'<path class="edge{kind}" data-parent="{_esc(edge["parent"])}" data-child="{_esc(edge["child"])}" '
                   f'd="{d}" marker-end="url(#arrow)"/>')
    for node in nodes:
        x, y = centre[node["name"]]
        x -= width / 2
        kind = "missing" if node.get("missing") else ("promoted" if node["verdict"] == "promoted" else "rejected")
        body = [f'<title>{_esc(node["title"])}</title>',
                f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(width)}" height="{NODE_H}" rx="6"/>']
        for i, line in enumerate(node["lines"][:3]):
            cls = ' class="name"' if i == 0 else ""
            text = ("★ " if i == 0 and node.get("best") else "") + line
            body.append(f'<text{cls} x="{_n(x + width / 2)}" y="{_n(y + 17 + 16 * i)}">{_esc(text)}</text>')
        inner = "".join(body)
        if node.get("href"):
            inner = f'<a href="{_esc(node["href"])}">{inner}</a>'
        out.append(f'<g class="node {kind}" data-name="{_esc(node["name"])}">{inner}</g>')
    out.append("</svg>")
    return "\n".join(out)


# --- curves --------------------------------------------------------------------------

W, H = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 60, 16, 12, 42


def curves(series: list[dict], look: dict[str, dict], x_label: str, y_label: str) -> str:
    """Lines on one pair of axes: `series` = [{"name", "points": [(x, y), …]}], one
    `path.curve` each, coloured by `look` (see `styles`)."""
    xs = [x for s in series for x, _ in s["points"]]
    ys = [y for s in series for _, y in s["points"]]
    x_ticks = ticks(min(xs, default=0.0), max(xs, default=1.0), whole=all(x == int(x) for x in xs))
    y_ticks = ticks(min(ys, default=0.0), max(ys, default=1.0))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / ((x1 - x0) or 1) * plot_w

    def sy(y: float) -> float:
        return TOP + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" role="img" aria-label="{_esc(y_label)} against {_esc(x_label)}">']
    out += _axes(x_ticks, y_ticks, sx, sy, x_label, y_label)
    for s in series:
        if not s["points"]:
            continue
        style = look[s["name"]]
        path = "".join(("M" if i == 0 else "L") + f"{_n(sx(x))} {_n(sy(y))}" for i, (x, y) in enumerate(s["points"]))
        dash = f' stroke-dasharray="{style["dash"]}"' if style["dash"] else ""
        out.append(f'<path class="curve" data-generation="{_esc(s["name"])}" d="{path}" '
                   f'stroke="{style["color"]}"{dash}><title>{_esc(s["name"])}</title></path>')
    out.append("</svg>")
    return "\n".join(out)


def _axes(x_ticks, y_ticks, sx, sy, x_label: str, y_label: str) -> list[str]:
    out = ['<g class="axis">']
    for t in y_ticks:
        out.append(f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{_n(sy(t))}" y2="{_n(sy(t))}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{_n(sy(t) + 4)}" text-anchor="end">{_label(t)}</text>')
    for t in x_ticks:
        out.append(f'<line class="grid" y1="{TOP}" y2="{H - BOTTOM}" x1="{_n(sx(t))}" x2="{_n(sx(t))}"/>'
                   f'<text class="tick" y="{H - BOTTOM + 16}" x="{_n(sx(t))}" text-anchor="middle">{_label(t)}</text>')
    out.append(f'<text class="label" x="{_n(LEFT + (W - LEFT - RIGHT) / 2)}" y="{H - 6}" '
               f'text-anchor="middle">{_esc(x_label)}</text>')
    out.append(f'<text class="label" transform="translate(14 {_n(TOP + (H - TOP - BOTTOM) / 2)}) rotate(-90)" '
               f'text-anchor="middle">{_esc(y_label)}</text>')
    out.append("</g>")
    return out


# --- scores per niche ----------------------------------------------------------------

ROW = 15


def scores(groups: list[dict], look: dict[str, dict], metric: str) -> str:
    """A dot per member and niche on one value axis: `groups` = [{"niche", "scores":
    [(member, value, title), …]}]. Dots, not bars: bits per byte differ in the second
    decimal, and a bar that does not start at zero would mislead."""
    values = [v for g in groups for _, v, _ in g["scores"]]
    low, high = min(values, default=0.0), max(values, default=1.0)
    if high <= low and low >= 0:  # one value for all (every accuracy 0): no negative axis
        low, high = 0.0, high * 1.25 or 1.0
    x_ticks = ticks(low, high)
    x0, x1 = x_ticks[0], x_ticks[-1]
    names = [m for g in groups for m, _, _ in g["scores"]] + [g["niche"] for g in groups]
    left = max(110, 7 * max((len(n) for n in names), default=8) + 24)
    width = left + 420 + RIGHT + 56

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * 420

    rows = sum(1 + len(g["scores"]) for g in groups)
    height = TOP + rows * ROW + 8 * len(groups) + BOTTOM
    out = [f'<svg class="chart scores" xmlns="http://www.w3.org/2000/svg" width="{_n(width)}" '
           f'height="{_n(height)}" viewBox="0 0 {_n(width)} {_n(height)}" role="img" '
           f'aria-label="{_esc(metric)} per niche">', '<g class="axis">']
    bottom = height - BOTTOM
    for t in x_ticks:
        out.append(f'<line class="grid" y1="{TOP}" y2="{_n(bottom)}" x1="{_n(sx(t))}" x2="{_n(sx(t))}"/>'
                   f'<text class="tick" y="{_n(bottom + 16)}" x="{_n(sx(t))}" text-anchor="middle">{_label(t)}</text>')
    out.append(f'<text class="label" x="{_n(left + 210)}" y="{_n(height - 6)}" text-anchor="middle">'
               f'{_esc(metric)}</text></g>')
    y = TOP
    for group in groups:
        y += ROW
        out.append(f'<text class="niche" x="8" y="{_n(y - 3)}">{_esc(group["niche"])}</text>')
        for member, value, title in group["scores"]:
            y += ROW
            style = look[member]
            out.append(f'<g class="score" data-member="{_esc(member)}" data-niche="{_esc(group["niche"])}" '
                       f'data-value="{value:.6f}"><title>{_esc(title)}</title>'
                       f'<text class="member" x="20" y="{_n(y - 3)}">{_esc(member)}</text>'
                       f'<line class="guide" x1="{left}" x2="{_n(sx(value))}" y1="{_n(y - 7)}" y2="{_n(y - 7)}"/>'
                       f'<circle cx="{_n(sx(value))}" cy="{_n(y - 7)}" r="4.5" fill="{style["color"]}"/>'
                       f'<text class="value" x="{_n(sx(value) + 8)}" y="{_n(y - 3)}">{value:.4f}</text></g>')
        y += 8
    out.append("</svg>")
    return "\n".join(out)
