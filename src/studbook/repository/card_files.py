"""Reading card twins (`cards/NAME.json`): untrusted input, validated at the edge.

Anyone may propose a descendant in a pull request, and a pull request may contain cards.
Before a card's fields reach what a reviewer reads (card diffs, the lineage's Mermaid
graph, the population table) they are checked here: bounded JSON without duplicate keys
or non-finite numbers, a name that is a generation name and the file's own stem, parents
and the identifying fields in a plain character set. A card that fails is refused naming
its file and key, never rendered.
"""

from __future__ import annotations

import json
import math
import re

from studbook.core.errors import StudbookError

MAX_CARD_BYTES = 1 << 20  # a card twin is a few kB; a megabyte is a bomb, not a card
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")  # the generation-name rule of recipes
TOKEN = re.compile(r"^[A-Za-z0-9_.,:+-]{1,128}$")  # methods, verdicts, kinds, metrics, tasks
REFERENCE = "uniform-byte"  # a founder's know-nothing reference parent


def _pairs(file: str):
    def hook(pairs: list) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise StudbookError("a key appears twice (a reviewer would see one, a reader the other)",
                                    file=file, key=str(key))
            seen[key] = value
        return seen
    return hook


def _no_constant(file: str):
    def refuse(name: str):
        raise StudbookError(f"{name} is not a number studbook accepts", file=file)
    return refuse


def load_json(data: bytes | str, file: str, limit: int = MAX_CARD_BYTES, what: str = "card"):
    """Untrusted JSON (a card twin, a ledger line): bounded, no duplicate key, no NaN or
    Infinity; errors name `file`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > limit:
        raise StudbookError(f"{len(raw):,} bytes: larger than a {what} may be ({limit:,})", file=file)
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_pairs(file),
                          parse_constant=_no_constant(file))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudbookError(f"malformed {what} JSON: {exc}", file=file) from None
    except RecursionError:
        raise StudbookError(f"malformed {what} JSON: nested too deeply", file=file) from None


def parse_card(data: bytes | str, file: str) -> dict:
    """A card twin's JSON, checked; `file` is what errors name (a path, or REV:path)."""
    card = load_json(data, file)
    if not isinstance(card, dict):
        raise StudbookError("a card is a JSON object", file=file)
    _check_fields(card, file)
    _check_numbers(card, file)
    return card


# figures the population, the lineage and parent selection compute with: numbers, if present
NUMBERS = (("parameters",), ("total_parameters",), ("primary", "child"), ("primary", "net_gain", "mean"),
           ("compute", "tokens"), ("compute", "flops"), ("compute", "seconds"))


def _check_numbers(card: dict, file: str) -> None:
    for path in NUMBERS:
        value: object = card
        for depth, part in enumerate(path):
            if not isinstance(value, dict):
                raise StudbookError("expected an object", file=file, key=".".join(path[:depth]))
            if part not in value:
                value = None
                break
            value = value[part]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):
            raise StudbookError(f"{value!r} is not a number", file=file, key=".".join(path))


def _check_fields(card: dict, file: str) -> None:
    name = card.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise StudbookError(f"{name!r} is not a generation name (lower-case letters, digits, '-', '_')",
                            file=file, key="name")
    stem = file.rsplit("/", 1)[-1].removesuffix(".json")
    if stem != name:
        raise StudbookError(f"the card of '{name}' is stored as {stem}.json", file=file, key="name")
    for key in ("kind", "method", "verdict", "contract", "architecture"):
        value = card.get(key)
        if value is not None and (not isinstance(value, str) or not TOKEN.match(value)):
            raise StudbookError(f"{value!r} is not a plain identifier", file=file, key=key)
    for index, parent in enumerate(card.get("parents") or []):
        parent_name = parent.get("name") if isinstance(parent, dict) else None
        if not isinstance(parent_name, str) or not (NAME.match(parent_name) or parent_name == REFERENCE):
            raise StudbookError(f"{parent_name!r} is not a generation name", file=file,
                                key=f"parents[{index}].name")
    for index, bench in enumerate(card.get("benchmarks") or []):
        for key in ("task", "metric", "niche"):
            value = bench.get(key) if isinstance(bench, dict) else None
            if value is not None and (not isinstance(value, str) or not TOKEN.match(value)):
                raise StudbookError(f"{value!r} is not a plain identifier", file=file,
                                    key=f"benchmarks[{index}].{key}")
        value = bench.get("value") if isinstance(bench, dict) else None
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise StudbookError(f"{value!r} is not a number", file=file, key=f"benchmarks[{index}].value")
