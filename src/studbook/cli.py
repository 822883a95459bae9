"""The `studbook` command. Each command is a thin wrapper; heavy imports stay inside."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

app = typer.Typer(help="studbook: breed, evaluate and keep the pedigree of language models.",
                  no_args_is_help=True, add_completion=False)


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _parameters(text: str) -> dict:
    """--parameters: inline YAML, or @FILE holding YAML."""
    import yaml
    from pathlib import Path

    from studbook.core.errors import StudbookError

    if not text:
        return {}
    source = Path(text[1:]).read_text(encoding="utf-8") if text.startswith("@") else text
    data = yaml.safe_load(source)
    if not isinstance(data, dict):
        raise StudbookError("--parameters must be a YAML mapping", key="parameters")
    return data


@app.command()
def propose(
    name: str = typer.Argument(..., help="generation name (folder generations/NAME)"),
    method: str = typer.Option("scratch", help="breeding method (see `studbook methods`)"),
    parents: str = typer.Option("", help="comma-separated parent generations, or 'auto' "
                                "(chosen from the population by the contract)"),
    contract: str = typer.Option("stdlib_code", help="conf/contract/NAME.yaml"),
    model: str = typer.Option("", help="conf/model/NAME.yaml (default: 'inherited' — the parent's "
                              "model — for a child, llama_3m for a founder)"),
    train: str = typer.Option("founder", help="conf/train/NAME.yaml"),
    data: str = typer.Option("stdlib_all", help="conf/data/NAME.yaml"),
    seed: int = typer.Option(1234, help="seed for initialisation and data order"),
    parameters: str = typer.Option("", help="the method's parameters: inline YAML or @FILE"),
    from_path: str = typer.Option("", "--from", help="found the generation on this local HF model "
                                  "folder (safetensors only; method 'import')"),
    refresh: bool = typer.Option(False, help="rewrite dvc.yaml of an existing generation"),
    scratch_reference: str = typer.Option("", help="a from-scratch generation trained to the same "
                                          "train target: the card compares compute-to-target"),
) -> None:
    """Write generations/NAME/ (recipe + dvc.yaml); then `dvc repro` breeds it."""
    from studbook.core.errors import StudbookError
    from studbook.repository.proposal import propose as do_propose
    from studbook.repository.proposal import propose_import
    from studbook.core.runtime import offline

    offline()
    choices = {"contract": contract, "model": model or ("inherited" if parents else "llama_3m"),
               "train": train, "data": data}
    try:
        if from_path:
            do_import = propose_import(name, from_path, choices, seed)
            typer.echo(f"imported: {do_import['source']} (sha256 {do_import['sha256'][:12]}…)")
        else:
            selection = None
            parent_list = [p.strip() for p in parents.split(",") if p.strip()]
            if parent_list == ["auto"]:
                from studbook.repository.population import select_parents

                parent_list, selection = select_parents(method, contract)
                typer.echo(f"parents (auto): {', '.join(parent_list)}")
            do_propose(name, method, parent_list, seed, choices, refresh=refresh,
                       parameters=_parameters(parameters), selection=selection,
                       compounding={"scratch": scratch_reference} if scratch_reference else None)
    except StudbookError as exc:
        _fail(exc)
    typer.echo(f"proposed: generations/{name}\nnext: dvc repro generations/{name}/dvc.yaml")


@app.command()
def merge(
    config: str = typer.Argument(..., help="a mergekit-format YAML whose models are local folders"),
    out: str = typer.Argument(..., help="output folder (written atomically)"),
    seed: int = typer.Option(0, "--seed", "--random-seed", help="seed for the random methods (dare_*, "
                             "della*, arcee_fusion above 10^6 elements): mergekit's --random-seed gives the same "
                             "tensors"),
    out_shard_size: str = typer.Option(None, "--out-shard-size", help="write shards of at most this many "
                                       "bytes (e.g. 5B, 500M; mergekit's option and shard layout) with an index"),
    replace: bool = typer.Option(False, "--replace", help="replace OUT if it exists (atomically, "
                                 "once the merge is complete), even if it is one of the inputs"),
) -> None:
    """Run a mergekit YAML as-is, streaming tensor by tensor (like `mergekit-yaml`)."""
    from studbook.core.errors import StudbookError
    from studbook.operators.merging import merge_from_yaml
    from studbook.core.runtime import offline, summary

    offline()
    try:
        _check_merge_output(config, out, replace)
        facts = merge_from_yaml(config, out, seed=seed, on_tensor=_merge_progress(),
                                out_shard_size=out_shard_size)
    except StudbookError as exc:
        _fail(exc)
    summary({"out": out, **{k: v for k, v in facts.items() if v is not None}})


def _merge_progress():
    """One line per 10 % of the tensors with an ETA (stderr), not one per tensor."""
    import sys
    import time

    start, shown = time.monotonic(), [-1]

    def show(done: int, total: int, name: str) -> None:
        tenth = done * 10 // total
        if tenth != shown[0]:
            shown[0] = tenth
            elapsed = time.monotonic() - start
            eta = elapsed / done * (total - done)
            print(f"merge: {done}/{total} tensors, {elapsed:.0f} s, ETA {eta:.0f} s", file=sys.stderr, flush=True)
    return show


def _check_merge_output(config: str, out: str, replace: bool) -> None:
    """No destructive write: an OUT that exists, or that is (or holds, or lies in) an input
    model folder, is refused unless --replace asks for it — before anything is read."""
    from pathlib import Path

    from studbook.core.config import load_yaml
    from studbook.core.errors import StudbookError

    target = Path(out).resolve()
    data = load_yaml(config)
    names = [m.get("model") for m in data.get("models") or [] if isinstance(m, dict)]
    names.append(data.get("base_model"))
    for key, name in zip([f"models[{i}].model" for i in range(len(names) - 1)] + ["base_model"], names):
        if not isinstance(name, str):
            continue
        candidates = {Path(name).resolve(), (Path(config).parent / name).resolve()}
        for folder in candidates:
            if folder == target or folder in target.parents or target in folder.parents:
                if not replace:
                    raise StudbookError(f"the output {out} is the input model {name} (or inside it); "
                                        "pass --replace to overwrite it once the merge is complete",
                                        file=config, key=key)
    if target.exists() and not replace:
        kind = "folder" if target.is_dir() else "file"
        raise StudbookError(f"the output {out} exists (a {kind}); pass --replace to replace it "
                            "atomically once the merge is complete", file=out)


@app.command()
def methods() -> None:
    """List the registered breeding methods."""
    from studbook.operators import methods as registry

    for name in registry.known():
        entry = registry.get(name)
        typer.echo(f"{name}: {entry.description}")


@app.command()
def population(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Every member, promoted or rejected, with its contract scores per benchmark, cost and
    whether its card agrees with its evidence here (★: the best verified promoted member of
    its contract). Tables fit the terminal's width (COLUMNS, or 80 in a pipe)."""
    from studbook.core.errors import StudbookError
    from studbook.repository.population import members, table as population_table

    try:
        rows = population_table()
    except StudbookError as exc:  # a card that is not what a card may be: named, not rendered
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    from rich.console import Console

    from studbook.core.escaping import rich_text as esc
    from studbook.repository.terminal import population as render

    render(Console(), rows, members())
    for r in rows:
        if r["verification"]["status"] == "tampered":
            Console(stderr=True).print(
                f"[bold red]tampered[/]: cards/{esc(r['name'])}.json disagrees with its evidence: "
                f"{esc(r['verification']['summary'].removeprefix('tampered: '))}")


@app.command()
def lineage(
    name: str = typer.Argument("", help="one member: its ancestry, descendants and cumulative cost"),
    fmt: str = typer.Option("text", "--format", help="text, mermaid or json"),
) -> None:
    """The family tree, read from cards (edges by weights sha256) and git history."""
    from studbook.core.errors import StudbookError
    from studbook.repository.lineage import as_json, cumulative, load, mermaid, related, text_tree

    if fmt not in ("text", "mermaid", "json"):
        _fail(StudbookError(f"unknown format '{fmt}' (text, mermaid, json)", key="--format"))
    try:
        members = load()
        names = None
        if name:
            ancestors, descendants = related(members, name)
            names = ancestors + [name] + descendants
    except StudbookError as exc:
        _fail(exc)
    if fmt == "json":
        data = as_json(members, names)
        if name:
            data["member"], data["cumulative"] = name, cumulative(members, name)
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    typer.echo((mermaid if fmt == "mermaid" else text_tree)(members, names), nl=False)
    if name:
        total = cumulative(members, name)
        typer.echo(f"cumulative to {name}: {total['generations']} generations, "
                   f"{total['tokens']:,} tokens, {total['flops']:.3g} FLOP, {total['seconds']:.0f} s")


card_app = typer.Typer(help="Cards across revisions.", no_args_is_help=True)
app.add_typer(card_app, name="card")


@card_app.command("diff")
def card_diff(
    base: str = typer.Argument(..., help="base revision (e.g. main)"),
    head: str = typer.Argument("HEAD", help="head revision (e.g. a pull request's branch)"),
    output: str = typer.Option("", "--output", "-o", help="also write the Markdown report here"),
) -> None:
    """Markdown report of cards added or changed between two revisions; exit 1 on a guarded
    regression, or when HEAD's card disagrees with its evidence here (tampered)."""
    from pathlib import Path

    from studbook.core.errors import StudbookError
    from studbook.repository.review import card_diff as run_diff

    try:
        text, status = run_diff(base, head)
    except StudbookError as exc:
        _fail(exc)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    typer.echo(text, nl=False)
    raise typer.Exit(status)


@app.command()
def negatives(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """The archive of rejected children, with why they were rejected."""
    from studbook.repository.population import negative_results

    rows = negative_results()  # rejected members, then candidates a search did not promote
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    from studbook.core.escaping import terminal

    if not rows:
        typer.echo("no rejected members")
    for r in rows:
        where = f", search {r['search']}, {r['status']}" if r["search"] else ""
        gain = "no net gain measured" if r["net_gain"] is None else f"net gain {r['net_gain']:+.4f}"
        typer.echo(terminal(f"{r['name']} ({r['method']} from {', '.join(r['parents'])}{where}): {gain} "
                            f"vs {r['reference_parent'] or '—'} — {'; '.join(r['reasons']) or 'no reason recorded'}"))


@app.command()
def site(
    out: str = typer.Argument("site", help="the site's folder (written atomically; an earlier site there is replaced)"),
    replace: bool = typer.Option(False, "--replace", help="replace OUT even if it is not a studbook site"),
) -> None:
    """Write the population as a static HTML site (no network): the lineage graph, the sortable
    table, scores per niche, every generation's training curves, each card and negative result."""
    from studbook.core.errors import StudbookError
    from studbook.core.runtime import summary
    from studbook.repository.site import build

    try:
        facts = build(out, replace=replace)
    except StudbookError as exc:
        _fail(exc)
    summary(facts)


@app.command()
def evolve(search: str = typer.Argument(..., help="the search's name (branch evolve/SEARCH, searches/SEARCH/)"),
           space: Optional[str] = typer.Option(None, "--space", help="conf/search/NAME.yaml (to start a search)"),
           n_candidates: Optional[int] = typer.Option(None, "--candidates", help="candidates to ask (budget)"),
           workers: Optional[int] = typer.Option(None, "--workers", help="candidates bred at once"),
           cap: Optional[float] = typer.Option(None, "--cap", help="seconds a candidate may run"),
           wall: Optional[float] = typer.Option(None, "--wall", help="seconds after which no candidate is asked"),
           promote: bool = typer.Option(True, "--promote/--no-promote",
                                        help="confirm the finalists and commit the winners"),
           profile: bool = typer.Option(False, "--profile",
                                        help="split each candidate's wall time: DVC, imports, training, "
                                             "evaluation, other (searches/SEARCH/profile.json)")) -> None:
    """Breed candidates from a search space through DVC's experiment queue, keep every one,
    confirm the best on items it was not selected on, and commit winners on evolve/SEARCH.

    The same command resumes a search that was stopped or killed: finished candidates are
    never re-run. The wall budget stops asking; candidates in flight finish (or hit their cap).
    """
    from studbook.core.errors import StudbookError
    from studbook.evolve.driver import evolve as run_search

    budget = {"candidates": n_candidates, "workers": workers, "candidate_seconds": cap, "wall_seconds": wall}
    try:
        run_search(search, space, budget, promote=promote, profile=profile)
    except StudbookError as exc:
        _fail(exc)


@app.command()
def candidates(search: Optional[str] = typer.Argument(None, help="one search (default: all)"),
               as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Every candidate of the breeding searches (`searches/*/ledger.jsonl`), kept whatever
    became of it, and the search's figures."""
    from studbook.core.errors import StudbookError
    from studbook.evolve import ledger

    found = ledger.ledgers()
    if search is not None and search not in found:
        _fail(StudbookError(f"no search '{search}' (known: {', '.join(found) or 'none'})",
                            file=f"searches/{search}/ledger.jsonl"))
    try:
        chosen = {n: ledger.read_ledger(p) for n, p in found.items() if search in (None, n)}
    except StudbookError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps({n: {"rows": rows, "summary": ledger.summary(rows)} for n, rows in chosen.items()},
                              indent=2, sort_keys=True))
        return
    from studbook.core.escaping import terminal

    if not chosen:
        typer.echo("no searches (studbook evolve writes searches/NAME/ledger.jsonl)")
    for name, rows in chosen.items():
        typer.echo(f"search {terminal(name)}")
        for r in rows:
            gain = (r.get("selection") or {}).get("net_gain")
            typer.echo(terminal(f"  {r['kind']} {r['trial']:>3} {r.get('name', '')} {r.get('operator') or ''} "
                                f"{r['status']}" + ("" if gain is None else f" net gain {gain:+.4f}")))
        for key, value in ledger.summary(rows).items():
            typer.echo(f"  {key}: {value}")


@app.command()
def show(name: str = typer.Argument(..., help="member name"),
         raw: bool = typer.Option(False, "--raw", help="the card's Markdown as written, front matter included")) -> None:
    """Print a member's card for the terminal: its front matter summed up in a few lines, its
    body rendered (tables, headings) to the terminal's width; --raw for the file itself."""
    from pathlib import Path

    from studbook.core.errors import StudbookError
    from studbook.repository.population import member

    try:
        member(name)
    except StudbookError as exc:
        _fail(exc)
    from studbook.core.escaping import terminal_lines

    file = Path("cards", f"{name}.md")
    text = file.read_text(encoding="utf-8")
    if raw:
        sys.stdout.write(terminal_lines(text))
        return
    from rich.console import Console

    from studbook.repository.terminal import card

    card(Console(), text, file.as_posix())


@app.command()
def publish(
    name: str = typer.Argument(..., help="member name (its card is cards/NAME.md)"),
    repo_id: str = typer.Argument(..., help="the Hub model repository, ORG/NAME (created if missing)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would go up (path, bytes, sha256); offline"),
    to: str = typer.Option("", "--to", help="write what would go up to this new folder instead (offline)"),
    private: bool = typer.Option(False, "--private", help="create the repository private"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch to upload to (created from main)"),
    base_model: Optional[list[str]] = typer.Option(None, "--base-model", help="PARENT=ORG/NAME: a parent's Hub id "
                                                   "(default: generations/PARENT/hub.yaml, written when it was "
                                                   "published)"),
) -> None:
    """Upload a member (weights, tokenizer, studbook.json, its card as README.md) to the Hugging
    Face Hub with huggingface_hub; token from HF_TOKEN or `hf auth login`."""
    from studbook.core.errors import StudbookError
    from studbook.core.runtime import offline, summary
    from studbook.repository import publish as hub

    try:
        planned = hub.plan(name, repo_id, hub.parse_overrides(base_model or []))
        if dry_run or to:
            offline()  # nothing below reaches the network; the guard makes sure of it
            typer.echo(hub.listing(planned), nl=False)
            if to:
                typer.echo(f"staged: {hub.stage(planned, to)}")
            return
        summary(hub.publish(planned, private=private, revision=revision))
    except StudbookError as exc:
        _fail(exc)


@app.command()
def check(names: list[str] = typer.Argument(None, help="generations (default: all)")) -> None:
    """Validate recipes, contracts, parents, device and data without computing anything:
    every check the stages make before compute."""
    from pathlib import Path

    from studbook.core.errors import StudbookError
    from studbook.repository.generation import resolve
    from studbook.stages.breed import check as breed_check

    from studbook.evidence.corpora import load_corpora

    try:
        load_corpora()  # every corpus's configuration, as its prepare stage validates it
    except StudbookError as exc:
        _fail(exc)
    names = names or sorted(p.parent.name for p in Path("generations").glob("*/recipe.yaml"))
    for name in names:
        deferred: list[str] = []
        try:
            gen = resolve(name)
            breed_check(gen, deferred)
        except StudbookError as exc:
            _fail(exc)
        typer.echo(f"ok: {gen.resolved.recipe_file} "
                   f"({', '.join(f'{k}={v}' for k, v in gen.resolved.choices.items())})"
                   + (f"; checked later: {'; '.join(deferred)}" if deferred else
                      "; compatible with its parents" if gen.parents else ""))


@app.command()
def refresh(names: list[str] = typer.Argument(None, help="generations (default: all)")) -> None:
    """Rewrite dvc.yaml files from the code: each stage's derived code and data dependencies."""
    from pathlib import Path

    from studbook.core.errors import StudbookError
    from studbook.repository.proposal import refresh_all

    try:
        changed = refresh_all(names or None, Path("."))
    except StudbookError as exc:
        _fail(exc)
    for path in changed:
        typer.echo(f"rewrote: {path}")
    typer.echo(f"refreshed: {len(changed)} file(s) changed")


@app.command()
def drift(
    names: list[str] = typer.Argument(None, help="members (default: every committed card)"),
    rev: str = typer.Option("HEAD", help="the revision whose cards are the reference"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Members whose re-bred weights or scores differ from their committed cards, and why."""
    from studbook.core.errors import StudbookError
    from studbook.repository.drift import drift as find, render

    try:
        reports = find(rev, ".", names or None)
    except StudbookError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(reports, indent=2, sort_keys=True))
    else:
        typer.echo(render(reports), nl=False)
    drifted = [r["member"] for r in reports if r["status"] == "drifted"]
    typer.echo(f"drifted: {len(drifted)}" + (f" ({', '.join(drifted)})" if drifted else ""), err=True)


@app.command()
def init(
    path: str = typer.Argument(..., help="an empty or new directory"),
    contract: str = typer.Option("stdlib_code", help="the founder's contract"),
    model: str = typer.Option("llama_3m", help="the founder's model config"),
    train: str = typer.Option("founder", help="the founder's training budget"),
) -> None:
    """Scaffold a new studbook repository (git, DVC, configs, tasks, stages, CI) with a founder proposed."""
    from studbook.core.errors import StudbookError
    from studbook.core.runtime import offline
    from studbook.repository.scaffold import init as scaffold

    offline()
    try:
        target = scaffold(path, contract, model, train)
    except StudbookError as exc:
        _fail(exc)
    typer.echo(f"initialised: {target}\nnext: cd {target} && bash scripts/breed.sh")


@app.command()
def demo(
    clone_dir: str = typer.Option("", "--dir", help="where to clone (default: a new temporary folder)"),
    ecology: str = typer.Option("stdlib_code", help="conf/ecology/NAME.yaml"),
) -> None:
    """Breed the seed ecology in a throwaway clone, one commit per generation; print the population."""
    import tempfile
    import time
    from pathlib import Path

    from studbook.repository.ecology import build
    from studbook.core.runtime import offline, progress, summary

    offline()
    target = Path(clone_dir) if clone_dir else Path(tempfile.mkdtemp(prefix="studbook-demo-")) / "studbook"
    start = time.perf_counter()
    timings = build(Path("conf/ecology") / f"{ecology}.yaml", target, log=progress)
    import subprocess

    subprocess.run([sys.executable, "-m", "studbook.cli", "population"], cwd=target, check=True)
    summary({"clone": str(target), "generations": len(timings),
             "wall_seconds": round(time.perf_counter() - start, 1),
             **{f"seconds_{t['name']}": t["seconds"] for t in timings}})


def main(argv: Optional[list[str]] = None) -> None:  # pragma: no cover - console entry
    app(argv)
if __name__ == "__main__":  # python -m studbook.cli
    app()
