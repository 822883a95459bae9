"""The population and a card, laid out for the terminal they are printed on.

Tables take the console's width (rich reads the terminal, or COLUMNS; 80 in a pipe) and
stay readable at 80 columns: per contract, the members (verdict, evidence, headline score,
net gain), one table of scores per metric (a column per niche, the best value bold), and
the cost. `card` renders a card's Markdown body with rich and sums up its YAML front
matter (the Hub's metadata, ~120 lines) in a few lines. Every value from a card goes
through `core.escaping` first: cards come from pull requests.
"""

from __future__ import annotations

from studbook.core.escaping import rich_text as esc
from studbook.core.escaping import terminal, terminal_lines

WIDE = 120  # from this width on, the cost columns sit in the members' table


def _si(value: float) -> str:
    """3.23M, 819k, 15.9T: three significant figures."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _evidence(check: dict | None) -> str:
    if check is None:
        return ""
    return {"verified": "verified", "unverified": "[dim]unverified[/]"}.get(
        check["status"], f"[bold red]TAMPERED[/] {esc(check.get('field'))}")


def population(console, rows: list[dict], cards: list[dict]) -> None:
    """Print `population.table` rows, with the per-benchmark scores of `cards`."""
    from rich import box
    from rich.table import Table

    wide = console.width >= WIDE
    benchmarks = {c["name"]: c["benchmarks"] for c in cards}
    for contract in sorted({r["contract"] for r in rows}):
        group = [r for r in rows if r["contract"] == contract]
        primary = group[0]["primary_metric"]
        table = Table(title=f"population · contract {esc(contract)} · primary: {esc(primary)}",
                      box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        # names and methods whole; parents and the verdict wrap to what is left
        table.add_column("member", no_wrap=True)
        table.add_column("method", no_wrap=True)
        table.add_column("parents", overflow="fold")
        table.add_column("verdict", overflow="fold")
        table.add_column("primary", justify="right", no_wrap=True)
        table.add_column("net gain", justify="right", no_wrap=True)
        cost = ("kind", "parameters", "tokens", "FLOPs", "seconds")
        for column in cost if wide else ():
            table.add_column(column, justify="left" if column == "kind" else "right", no_wrap=True)
        for r in group:
            cells = [("★ " if r["best"] else "") + esc(r["name"]), esc(r["method"]),
                     esc(", ".join(r["parents"])),
                     f"{esc(r['verdict'])} {_evidence(r['verification'])}".rstrip(),
                     f"{r['primary']:.4f}", f"{r['net_gain']:+.4f}"]
            table.add_row(*cells, *(_cost(r) if wide else ()))
        console.print(table)
        for metric, niches, lines in _scores(group, benchmarks, primary):
            scores = Table(title=f"{esc(metric)} per niche", box=box.SIMPLE_HEAD, title_justify="left",
                           pad_edge=False)
            scores.add_column("member", no_wrap=True)
            for niche in niches:
                scores.add_column(esc(niche), justify="right", overflow="fold", min_width=6)
            for line in lines:
                scores.add_row(*line)
            console.print(scores)
        if not wide:
            table = Table(title="cost", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
            table.add_column("member", no_wrap=True)
            for column in cost:
                table.add_column(column, justify="left" if column == "kind" else "right", no_wrap=True)
            for r in group:
                table.add_row(esc(r["name"]), *_cost(r))
            console.print(table)


def _cost(r: dict) -> list[str]:
    return [esc(r["kind"]), _si(r["parameters"]), _si(r["tokens"]), _si(r["flops"]), f"{r['seconds']:.0f}"]


def _scores(group: list[dict], benchmarks: dict[str, list[dict]], primary: str):
    """(metric, column names, rows) per metric the members were scored on, the primary
    metric first: a column per niche (the task's name when a metric has no niche, or
    several tasks share one); the best value of each column bold, by its direction."""
    by_metric: dict[str, dict[str, str]] = {}  # metric -> task -> column
    for r in group:
        for b in benchmarks.get(r["name"], []):
            by_metric.setdefault(b["metric"], {})[b["task"]] = b.get("niche") or b["task"]
    for metric, tasks in sorted(by_metric.items(), key=lambda item: (item[0] != primary, item[0])):
        names = list(tasks.values())
        if len(set(names)) < len(names):  # two tasks in one niche: the tasks name the columns
            tasks = {task: task for task in tasks}
        columns = list(dict.fromkeys(tasks.values()))
        values: dict[str, dict[str, tuple[float, str]]] = {}
        for r in group:
            for b in benchmarks.get(r["name"], []):
                if b["metric"] == metric:
                    values.setdefault(r["name"], {})[tasks[b["task"]]] = (b["value"], b.get("direction"))
        best = {}
        for column in columns:
            scored = [(row[column][0], name) for name, row in values.items() if column in row]
            direction = next(row[column][1] for row in values.values() if column in row)
            best[column] = (max if direction == "higher" else min)(scored)[1]
        lines = []
        for r in group:
            row = values.get(r["name"], {})
            lines.append([esc(r["name"])] + [
                "" if column not in row else
                (f"[bold]{row[column][0]:.4f}[/]" if best.get(column) == r["name"] and len(values) > 1
                 else f"{row[column][0]:.4f}") for column in columns])
        yield metric, columns, lines


def front_matter_summary(meta: dict) -> list[str]:
    """A card's YAML front matter in a few lines: scalars and short lists as they are,
    longer structures by their size (the full record is the card's JSON twin)."""
    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    simple, sized = [], []
    for key, value in meta.items():
        if isinstance(value, dict):
            sized.append(f"{key}: {count(len(value), 'field', 'fields')}")
        elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            simple.append(f"{key}: {', '.join(map(str, value))}")
        elif isinstance(value, list):
            sized.append(f"{key}: {count(len(value), 'entry', 'entries')}")
        else:
            simple.append(f"{key}: {value}")
    return [terminal(line) for line in simple + sized]


def split_front_matter(text: str) -> tuple[dict, str]:
    """(front matter, body) of a card; an empty mapping when it has none."""
    import yaml

    if text.startswith("---\n"):
        head, sep, body = text[4:].partition("\n---\n")
        if sep:
            try:
                meta = yaml.safe_load(head)
            except yaml.YAMLError:
                meta = None
            if isinstance(meta, dict):
                return meta, body
    return {}, text


def card(console, text: str, source: str) -> None:
    """A card for the terminal: its front matter summed up, its body as rich Markdown
    (links shown as text, not as terminal hyperlinks)."""
    from rich.markdown import Markdown
    from rich.panel import Panel
    from rich.text import Text

    meta, body = split_front_matter(text)
    if meta:
        lines = front_matter_summary(meta)
        console.print(Panel(Text("\n".join(lines)), title=f"front matter of {esc(source)}",
                            title_align="left", expand=False))
    console.print(Markdown(terminal_lines(body), hyperlinks=False))
