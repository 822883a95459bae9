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


@app.command()
def propose(
    name: str = typer.Argument(..., help="generation name (folder generations/NAME)"),
    method: str = typer.Option("scratch", help="breeding method (see `studbook methods`)"),
    parents: str = typer.Option("", help="comma-separated parent generations"),
    contract: str = typer.Option("stdlib_code", help="conf/contract/NAME.yaml"),
    model: str = typer.Option("llama_3m", help="conf/model/NAME.yaml"),
    train: str = typer.Option("founder", help="conf/train/NAME.yaml"),
    data: str = typer.Option("stdlib_all", help="conf/data/NAME.yaml"),
    seed: int = typer.Option(1234, help="seed for initialisation and data order"),
    refresh: bool = typer.Option(False, help="rewrite dvc.yaml of an existing generation"),
) -> None:
    """Write generations/NAME/ (recipe + dvc.yaml); then `dvc repro` breeds it."""
    from .errors import StudbookError
    from .generation import propose as do_propose
    from .runtime import offline

    offline()
    parent_list = [p.strip() for p in parents.split(",") if p.strip()]
    try:
        do_propose(name, method, parent_list, seed,
                              {"contract": contract, "model": model, "train": train, "data": data},
                              refresh=refresh)
    except StudbookError as exc:
        _fail(exc)
    typer.echo(f"proposed: generations/{name}\nnext: dvc repro generations/{name}/dvc.yaml")


@app.command()
def methods() -> None:
    """List the registered breeding methods."""
    from . import methods as registry

    for name in registry.known():
        entry = registry.get(name)
        typer.echo(f"{name}: {entry.description}")


@app.command()
def population(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Every member, promoted or rejected, with its contract scores and cost."""
    from .population import members, row

    rows = [row(m) for m in members()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="population")
    for column in ("member", "kind", "method", "parents", "bits/byte", "net gain", "verdict",
                   "parameters", "tokens", "seconds"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["name"], r["kind"], r["method"], ", ".join(r["parents"]),
                      f"{r['primary']:.4f}", f"{r['net_gain']:+.4f}", r["verdict"],
                      f"{r['parameters']:,}", f"{r['tokens']:,}", f"{r['seconds']:.0f}")
    Console(width=160).print(table)


@app.command()
def show(name: str = typer.Argument(..., help="member name")) -> None:
    """Print a member's card."""
    from pathlib import Path

    from .errors import StudbookError
    from .population import member

    try:
        member(name)
    except StudbookError as exc:
        _fail(exc)
    sys.stdout.write(Path("cards", f"{name}.md").read_text(encoding="utf-8"))


@app.command()
def check(name: str = typer.Argument(..., help="generation name")) -> None:
    """Validate a generation's recipe, contract and parents without computing anything."""
    from .errors import StudbookError
    from .generation import load_generation

    try:
        resolved = load_generation(name)
    except StudbookError as exc:
        _fail(exc)
    typer.echo(f"ok: {resolved.recipe_file} ({', '.join(f'{k}={v}' for k, v in resolved.choices.items())})")


def main(argv: Optional[list[str]] = None) -> None:  # pragma: no cover - console entry
    app(argv)
if __name__ == "__main__":  # python -m studbook.cli
    app()
