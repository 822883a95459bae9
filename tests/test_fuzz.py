"""Fuzz (issue 13, "Must show" 2): mutated recipes, contracts and task YAMLs — mutations of
the shipped ones — are each accepted or refused with a StudbookError: never a traceback,
never a hang, never a memory bomb.

Each case replaces one file of a scratch copy of the repository's declarative files
(conf/, tasks/, generations/*/recipe.yaml, params.yaml) and runs what `studbook check` runs
before compute for it, in a worker process bounded in time (a timer per case, and a
supervisor that kills a worker the timer cannot interrupt) and in memory (RLIMIT_AS, and
a bound on peak-RSS growth). See tests/fuzz_worker.py.

The mutations are seeded and deterministic: case `KIND-NNN` is drawn from
`random.Random(f"{SEED}-KIND-NNN")` and always mutates the same file the same way. Set
STUDBOOK_FUZZ_DUMP=DIR to have every failing case's mutated file written into DIR.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import random
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, copy_skeleton
from fuzz_worker import run_cases

SEED = 13
COUNTS = {"recipe": 110, "contract": 90, "task": 100}
TIME_BOUND_S = 5.0  # per case; the slowest shipped check (a three-parent merge) takes < 1 s
MEMORY_MB = 2048  # address space per worker; a case may grow peak RSS by 512 MiB at most
# one worker: on two shared cores a second one costs its own warm-up (imports) and gains little
WORKERS = int(os.environ.get("STUDBOOK_FUZZ_WORKERS", "1"))

# ---------------------------------------------------------------- what is mutated into the files

HOSTILE_STRINGS = [
    "${oc.env:HOME}", "${oc.env:RT_SEED,7}", "${now:%Y-%m-%d}", "${hydra:runtime.cwd}",
    "${oc.decode:'{a: 1}'}", "${oc.create:{a: ${oc.env:HOME}}}", "${no_such_resolver:x}",
    "${seed}", "${name}${name}", "${", "\\${oc.env:HOME}",
    "!function os.system", "!function ../evil.fn", "!function evil.fn",
    "!!python/object/apply:os.system ['true']",
    "../../etc/passwd", "/etc/passwd", "..", "/", "~/.ssh/id_rsa", "C:\\Windows\\system32",
    "x" * 100_000, "ünïcödé ✓ 𝔘𝔫𝔦 \u202egnp.exe", "名前", "\x00", "\x7f\x1b[31m",
    '"] click g1 "javascript:alert(1)"', "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>", "| a | b |", "[x](javascript:alert(1))",
    "", " ", "\n", "-", "null", "~", "yes", "0x10", "1e999", "NaN", ".inf", "_self_",
    "__proto__", "{{ 7*7 }}", "{{ ''.__class__.__mro__ }}", "{% for x in range(10**9) %}x{% endfor %}",
]
OTHER_TYPES = [0, -1, 1, 10**30, -10**30, 2**63, float("nan"), float("inf"), float("-inf"), 1e308,
               -0.0, 0.5, 1.5, "", "x", "0", [], [1, "a", None], {}, {"a": 1}, None, True, False]
UNKNOWN_KEYS = ["_target_", "hydra", "defaults", "include", "task", "class", "__class__",
                "unknown_key", "metadata", "_self_", "<<", "process_results", "custom_dataset",
                "!function", "${oc.env:HOME}", "use_prompt", "task_list", "group"]
TAGS = ["!function os.system ", "!function ../evil.fn ", "!<!function> ../evil.fn ", "!%66unction ",
        "!<tag:yaml.org,2002:python/object/apply:os.system> ", "!!python/object/apply:os.system ",
        "!!python/name:os.system ", "!!python/object:os.system ", "!!binary ", "!!set ", "!!omap ",
        "!!timestamp ", "!!float ", "!!int ", "!!str ", "!!map ", "!!seq ", "!e!tion ", "!custom "]
TOKENS = ["&a ", "*a ", "*undefined ", "? ", "- ", "[", "]", "{", "}", ",", "\t", "'", '"', "|",
          ">", "#", "%", "@", "`", "\n---\n", "\n...\n", "\ufeff", "\x00", "\x85", "\u2028", "\r",
          ": ", "<<: *a\n"]
DIRECTIVES = ["%TAG ! tag:x,2000:\n---\n", "%TAG !e! !func\n---\n", "%YAML 1.1\n---\n",
              "%YAML 9.9\n---\n", "%FOO bar\n---\n", "%TAG !! tag:evil,2000:\n---\n"]


def _paths(node, prefix=(), seen=None):
    """Every key path in a parsed document (not the root itself); a container reached again
    (an alias, a bomb) is not entered again."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return
    seen.add(id(node))
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,), seen)


def _pick(rng: random.Random, palette: list):
    return copy.deepcopy(rng.choice(palette))  # never share (and later edit) a palette's list


def _get(doc, path):
    for part in path:
        doc = doc[part]
    return doc


def _set(doc, path, value) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _show(path) -> str:
    return ".".join(str(p) for p in path)[:80] or "(top level)"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 50 else f"{text[:40]}…({len(text)} chars)"


def _bomb(rng: random.Random, levels: int = 10, width: int = 10):
    """A value that is `levels` levels of `width` references to the level below: a few
    hundred bytes of YAML once dumped (anchors and aliases), width**levels nodes expanded."""
    value = rng.choice(["x", 1, {"k": "x"}])
    as_dict = rng.random() < 0.5
    for _ in range(levels):
        value = {f"k{i}": value for i in range(width)} if as_dict else [value] * width
    return value


# Structural mutations: each edits the parsed document in place and says what it did.

def delete_key(rng, doc) -> str:
    paths = [p for p in _paths(doc) if isinstance(_get(doc, p[:-1]), dict)]
    if not paths:
        return "delete: nothing to delete"
    path = rng.choice(paths)
    del _get(doc, path[:-1])[path[-1]]
    return f"delete {_show(path)}"


def retype(rng, doc) -> str:
    path = rng.choice(list(_paths(doc)) or [("extra",)])
    value = _pick(rng, OTHER_TYPES)
    _set(doc, path, value)
    return f"retype {_show(path)} -> {_short(value)}"


def same_type(rng, doc) -> str:
    """A leaf keeps its type but takes an extreme value, or (a string) another string of the
    same file: these get past the schema, to the checks behind it."""
    leaves = [p for p in _paths(doc) if not isinstance(_get(doc, p), (dict, list))]
    if not leaves:
        return retype(rng, doc)
    path = rng.choice(leaves)
    value = _get(doc, path)
    if isinstance(value, bool):
        new = not value
    elif isinstance(value, int):
        new = rng.choice([0, -1, 1, 2, 3, 7, 2**31, 2**63, 10**30, -10**30, value * 1000, value + 1])
    elif isinstance(value, float):
        new = rng.choice([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e-308, 1e308, -value,
                          value * 1000, 1.5])
    elif isinstance(value, str):
        strings = [_get(doc, p) for p in leaves if isinstance(_get(doc, p), str)]
        new = rng.choice(strings + [value.upper(), value + "x", value[::-1], value * 2])
    else:
        new = _pick(rng, [0, "x", [], {}])
    _set(doc, path, new)
    return f"{_show(path)} -> {_short(new)}"


def hostile_string(rng, doc) -> str:
    leaves = [p for p in _paths(doc) if not isinstance(_get(doc, p), (dict, list))]
    strings = [p for p in leaves if isinstance(_get(doc, p), str)]
    path = rng.choice(strings if strings and rng.random() < 0.7 else leaves or [("extra",)])
    value = rng.choice(HOSTILE_STRINGS)
    _set(doc, path, value)
    return f"hostile string at {_show(path)}: {_short(value)}"


def nest_deeply(rng, doc) -> str:
    path = rng.choice(list(_paths(doc)) or [("extra",)])
    depth = rng.randint(20, 60)
    value = _get(doc, path) if path != ("extra",) else 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    _set(doc, path, value)
    return f"nest {_show(path)} {depth} levels deep"


def unknown_key(rng, doc) -> str:
    mappings = [()] + [p for p in _paths(doc) if isinstance(_get(doc, p), dict)]
    path = rng.choice(mappings)
    key, value = rng.choice(UNKNOWN_KEYS), _pick(rng, OTHER_TYPES + HOSTILE_STRINGS[:14])
    _get(doc, path)[key] = value
    return f"add key {key!r} = {_short(value)} under {_show(path)}"


def alias_bomb_value(rng, doc) -> str:
    path = rng.choice(list(_paths(doc)) + [("bomb",)])
    _set(doc, path, _bomb(rng))
    return f"alias bomb (10 levels x 10) at {_show(path)}"


def list_edit(rng, doc) -> str:
    lists = [p for p in _paths(doc) if isinstance(_get(doc, p), list)]
    if not lists:
        return retype(rng, doc)
    path = rng.choice(lists)
    items = _get(doc, path)
    how = rng.choice(["empty", "duplicate first", "drop one", "reverse"])
    if how == "empty":
        items.clear()
    elif how == "duplicate first" and items:
        items.append(items[0])
    elif how == "drop one" and items:
        items.pop(rng.randrange(len(items)))
    else:
        items.reverse()
    return f"list {_show(path)}: {how}"


def swap_values(rng, doc) -> str:
    paths = list(_paths(doc))
    if len(paths) < 2:
        return retype(rng, doc)
    first, second = rng.sample(paths, 2)
    if first[:len(second)] == second or second[:len(first)] == first:  # one inside the other
        return retype(rng, doc)
    a, b = _get(doc, first), _get(doc, second)
    _set(doc, first, b)
    _set(doc, second, a)
    return f"swap {_show(first)} <-> {_show(second)}"


STRUCTURAL = [same_type, same_type, same_type, same_type,  # the most likely to get past the schema
              delete_key, retype, hostile_string, nest_deeply, unknown_key, alias_bomb_value,
              list_edit, swap_values]


def duplicate_key(rng, text: str, doc) -> tuple[str, str]:
    """A top-level key written twice (YAML says the document is invalid; PyYAML keeps the last)."""
    key = rng.choice(list(doc) or ["seed"])
    value = _pick(rng, [_get(doc, (key,)) if key in doc else 1] + OTHER_TYPES)
    line = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, width=10**9)
    return text + line, f"duplicate top-level key {_show((key,))} = {_short(value)}"


def structural(rng: random.Random, original: bytes) -> tuple[bytes, str]:
    doc = yaml.safe_load(original)
    said = [rng.choice(STRUCTURAL)(rng, doc) for _ in range(rng.choice([1, 1, 2, 3]))]
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=10**9)
    if rng.random() < 0.15:
        text, what = duplicate_key(rng, text, doc)
        said.append(what)
    return text.encode("utf-8"), "; ".join(said)


# Textual mutations: each edits the raw file and says what it did.

def _value_positions(text: str) -> list[int]:
    """Offsets just after `key: ` or `- ` (where a tag, anchor or value starts)."""
    return [m.end() for m in re.finditer(r"(?m)(?:^\s*[\w.-]+:[ ]|^\s*- )", text)] or [0]


def flip_byte(rng, data: bytes) -> tuple[bytes, str]:
    data = data or b" "
    at = rng.randrange(len(data))
    new = rng.choice([rng.randrange(256), ord(rng.choice(":-[]{},#&*!|>'\"%@`\t\n "))])
    return data[:at] + bytes([new]) + data[at + 1:], f"byte {at} -> {new:#04x}"


def insert_token(rng, data: bytes) -> tuple[bytes, str]:
    text = data.decode("utf-8")
    token = rng.choice(TAGS + TOKENS)
    at = rng.choice(_value_positions(text)) if rng.random() < 0.7 else rng.randrange(len(text) + 1)
    return (text[:at] + token + text[at:]).encode("utf-8"), f"insert {token!r} at {at}"


def directive(rng, data: bytes) -> tuple[bytes, str]:
    text = data.decode("utf-8")
    head = rng.choice(DIRECTIVES)
    tag = {"%TAG !e! !func\n---\n": "!e!tion ", "%TAG ! tag:x,2000:\n---\n": "!x "}.get(head, "!!str ")
    at = rng.choice(_value_positions(text))
    return (head + text[:at] + tag + text[at:]).encode("utf-8"), f"directive {head.splitlines()[0]!r}, tag {tag!r}"


def merge_key(rng, data: bytes) -> tuple[bytes, str]:
    lines = data.decode("utf-8").splitlines()
    tops = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z_][\w-]*:", line)]
    if not tops:
        return insert_token(rng, data)
    i = rng.choice(tops)
    lines[i] = lines[i].replace(":", ": &a", 1)
    merge = rng.choice(["<<: *a", "<<: [*a, *a]", "<<: *b"])
    return ("\n".join(lines) + f"\n{merge}\n").encode("utf-8"), f"anchor &a on line {i + 1}, {merge!r} at the end"


def alias_bomb_text(rng, data: bytes) -> tuple[bytes, str]:
    """Like the issue's 516-byte recipe: ten top-level keys, each ten aliases of the last."""
    width = 10
    lines = [f"lol0: &lol0 [{', '.join(['lol'] * width)}]"]
    lines += [f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * width)}]" for i in range(1, 10)]
    text = data.decode("utf-8").rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    if rng.random() < 0.5:  # and make a key the code reads use it
        key = rng.choice(re.findall(r"(?m)^([A-Za-z_][\w-]*):", text) or ["seed"])
        text += f"{key}: *lol9\n"
        return text.encode("utf-8"), f"alias bomb appended (10 levels x 10), then {key}: *lol9"
    return text.encode("utf-8"), "alias bomb appended as top-level keys (10 levels x 10)"


def truncate(rng, data: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(data) or 1)
    return data[:at], f"truncated at byte {at} of {len(data)}"


def tabs(rng, data: bytes) -> tuple[bytes, str]:
    lines = data.decode("utf-8").split("\n")
    indented = [i for i, line in enumerate(lines) if line.startswith(" ")] or [0]
    i = rng.choice(indented)
    lines[i] = "\t" + lines[i].lstrip(" ")
    return "\n".join(lines).encode("utf-8"), f"tab indentation on line {i + 1}"


def unbalanced(rng, data: bytes) -> tuple[bytes, str]:
    text = data.decode("utf-8")
    at = rng.choice(_value_positions(text))
    token = rng.choice(["[", "{", "[[", "{a: [", "]", "}", "[a, {b: c]"])
    return (text[:at] + token + text[at:]).encode("utf-8"), f"unbalanced {token!r} at {at}"


def deep_brackets(rng, data: bytes) -> tuple[bytes, str]:
    depth = rng.choice([100, 1000, 20_000])
    opener, closer = rng.choice([("[", "]"), ("{a: ", "}")])
    text = data.decode("utf-8").rstrip("\n") + f"\ndeep: {opener * depth}1{closer * depth}\n"
    return text.encode("utf-8"), f"flow collection nested {depth} deep ({opener.strip()})"


def line_edit(rng, data: bytes) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    how = rng.choice(["duplicate", "delete", "swap with next"])
    if how == "duplicate":
        lines.insert(i, lines[i])
    elif how == "delete":
        del lines[i]
    elif i + 1 < len(lines):
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    return b"\n".join(lines), f"{how} line {i + 1}"


def encoding(rng, data: bytes) -> tuple[bytes, str]:
    how = rng.choice(["invalid UTF-8", "BOM", "CRLF", "UTF-16", "NUL"])
    if how == "invalid UTF-8":
        at = rng.randrange(len(data) + 1)
        return data[:at] + b"\xff\xfe\xc3(" + data[at:], f"invalid UTF-8 bytes at {at}"
    if how == "BOM":
        return b"\xef\xbb\xbf" + data, "UTF-8 byte-order mark"
    if how == "CRLF":
        return data.replace(b"\n", b"\r\n"), "CRLF line ends"
    if how == "UTF-16":
        return data.decode("utf-8").encode("utf-16"), "re-encoded as UTF-16"
    return data.replace(b"\n", b"\x00\n", 1), "NUL byte on the first line"


def huge(rng, data: bytes) -> tuple[bytes, str]:
    size = rng.choice([1_100_000, 2_000_000])
    return data.rstrip(b"\n") + b"\nhuge: " + b"x" * size + b"\n", f"a {size:,}-byte scalar appended"


TEXTUAL = [flip_byte, insert_token, insert_token, directive, merge_key, alias_bomb_text, truncate,
           tabs, unbalanced, deep_brackets, line_edit, encoding, huge]


def textual(rng: random.Random, original: bytes) -> tuple[bytes, str]:
    data, said = original, []
    for _ in range(rng.choice([1, 1, 2])):
        op = rng.choice(TEXTUAL)
        try:
            data, what = op(rng, data)
        except UnicodeDecodeError:  # an earlier byte edit broke the text: flip another byte
            data, what = flip_byte(rng, data or b" ")
        said.append(what)
    return data, "; ".join(said)


# ---------------------------------------------------------------- the scratch repository and the cases

def make_repo(dest: Path, sentinel: Path) -> Path:
    """The declarative files of the repository (and its code) plus the shipped recipes; a
    `pico` founder composing the pico contract, model and train budget; and, outside tasks/,
    a hook module (and files including it) whose import would write `sentinel`."""
    repo = copy_skeleton(dest)
    for recipe in sorted((ROOT / "generations").glob("*/recipe.yaml")):
        folder = repo / "generations" / recipe.parent.name
        folder.mkdir(parents=True)
        shutil.copy2(recipe, folder / "recipe.yaml")
        if (recipe.parent / "dvc.yaml").is_file():
            shutil.copy2(recipe.parent / "dvc.yaml", folder / "dvc.yaml")
    founder = (ROOT / "generations/founder/recipe.yaml").read_text()
    pico = repo / "generations/pico/recipe.yaml"
    pico.parent.mkdir()
    pico.write_text(founder.replace("founder", "pico").replace("stdlib_code", "stdlib_pico")
                    .replace("llama_3m", "llama_pico"))
    (repo / "evil.py").write_text(f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\n"
                                  "def fn(*args, **kwargs):\n    return 0\n")
    (repo / "evil_task.yaml").write_text("process_results: !function evil.fn\n")
    (repo / "evil.txt").write_text("process_results: !function evil.fn\n")
    return repo


def targets(repo: Path) -> dict[str, list[str]]:
    """Files mutated, by kind: shipped recipes, and (as recipes too) the group files some
    recipe composes; contracts; task YAMLs and the templates they include."""
    composed = set()
    for recipe in repo.glob("generations/*/recipe.yaml"):
        for entry in yaml.safe_load(recipe.read_text()).get("defaults", []):
            if isinstance(entry, dict):
                (group, option), = entry.items()
                composed.add(f"conf/{group}/{option}.yaml")
    shipped = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("generations/*/recipe.yaml"))
    return {
        "recipe": shipped,
        "group": sorted(f for f in composed if not f.startswith("conf/contract/")),
        "contract": sorted(str(p.relative_to(repo)) for p in repo.glob("conf/contract/*.yaml")),
        "task": sorted(str(p.relative_to(repo)) for p in repo.glob("tasks/*") if p.is_file()),
    }


def _case(case_id: str, kind: str, target: str, what: str, data: bytes, family: str) -> dict:
    return {"id": case_id, "kind": kind, "target": target, "what": what, "family": family,
            "content": base64.b64encode(data).decode("ascii")}


def make_cases(repo: Path, counts: dict[str, int] = COUNTS, seed: int = SEED) -> list[dict]:
    """The seeded cases: per kind, a file and a structural or textual mutation of it."""
    files = targets(repo)
    cases = []
    for kind, count in counts.items():
        for number in range(count):
            case_id = f"{kind}-{number:03d}"
            rng = random.Random(f"{seed}-{case_id}")
            # a recipe case mutates a recipe or, as often, a group file a recipe composes
            target = rng.choice(files["group" if kind == "recipe" and rng.random() < 0.5 else kind])
            how = rng.choice([structural, textual])
            data, said = how(rng, (repo / target).read_bytes())
            cases.append(_case(case_id, kind, target, f"{how.__name__}: {said}", data, "fuzz"))
    return cases


def trace_cases(repo: Path, sentinel: Path) -> list[dict]:
    """Files that would run the hook module outside tasks/ (each bypass the red team found),
    carry a Python tag that would write `sentinel`, or hold an alias bomb: all to be refused."""
    system = f"!!python/object/apply:os.system [\"touch '{sentinel}'\"]"
    bomb = "".join(f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}' if i else 'lol'] * 10)}]\n"
                   for i in range(10))
    task, recipe, contract = ("tasks/stdlib_bpb_general.yaml", "generations/founder/recipe.yaml",
                              "conf/contract/stdlib_pico.yaml")
    text = {file: (repo / file).read_text() for file in (task, recipe, contract)}
    include = "include: _stdlib_bpb_template_yaml"
    payloads = {
        "hook by the verbatim tag !<!function>": (task, text[task] + "process_results: !<!function> ../evil.fn\n"),
        "hook by %TAG !e! !func": (task, "%TAG !e! !func\n---\n" + text[task] + "process_results: !e!tion ../evil.fn\n"),
        "hook by !function outside the folder": (task, text[task] + "process_results: !function ../evil.fn\n"),
        "hook by include of a YAML outside tasks/": (task, text[task].replace(
            include, "include: [_stdlib_bpb_template_yaml, ../evil_task.yaml]")),
        "hook by include of a file not named yaml": (task, text[task].replace(
            include, "include: [_stdlib_bpb_template_yaml, ../evil.txt]")),
        "python tag in a task": (task, text[task] + f"metadata: {system}\n"),
        "python tag in a recipe": (recipe, text[recipe].replace("seed: 1234", f"seed: {system}")),
        "python tag in a contract": (contract, text[contract] + f"extra: {system}\n"),
        "alias bomb and hook in a task": (task, text[task] + bomb + "process_results: !<!function> ../evil.fn\n"),
        "alias bomb in a recipe": (recipe, text[recipe] + bomb + "parameters: {x: *lol9}\n"),
        "alias bomb in a contract": (contract, text[contract].replace("gate:", "gate:\n  seed: *lol9", 1)
                                     .replace("description:", bomb + "description:", 1)),
    }
    kinds = {task: "task", recipe: "recipe", contract: "contract"}
    return [_case(name, kinds[file], file, name, data.encode("utf-8"), "trace")
            for name, (file, data) in payloads.items()]


def originals_of(repo: Path, cases: list[dict]) -> dict[str, bytes]:
    return {case["target"]: (repo / case["target"]).read_bytes() for case in cases}


def run_in_workers(tmp: Path, repo: Path, cases: list[dict], workers: int = WORKERS):
    """Each worker gets its own copy of `repo`; returns (results, warm-ups)."""
    repos = [repo] + [Path(shutil.copytree(repo, tmp / f"repo{i}", symlinks=True)) for i in range(1, workers)]
    return run_cases(repos, cases, originals_of(repo, cases), TIME_BOUND_S, MEMORY_MB, tmp / "workers.log")


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory) -> dict:
    """All cases run once (one worker warm-up); the tests below each judge a part of the results."""
    tmp = tmp_path_factory.mktemp("fuzz")
    sentinel = tmp / "SENTINEL"
    repo = make_repo(tmp / "repo0", sentinel)
    cases = make_cases(repo) + trace_cases(repo, sentinel)
    start = time.perf_counter()
    results, warmups = run_in_workers(tmp, repo, cases)
    return {"cases": cases, "results": results, "warmups": warmups, "sentinel": sentinel,
            "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------- judging the results

def _outcomes(fuzz: dict, family: str, kind: str | None = None) -> list[tuple[dict, dict]]:
    return [(c, r) for c, r in zip(fuzz["cases"], fuzz["results"])
            if c["family"] == family and kind in (None, c["kind"])]


def failures(fuzz: dict, kind: str) -> list[str]:
    """Every fuzz case of `kind` neither accepted nor refused with a StudbookError, described."""
    out = []
    dump = os.environ.get("STUDBOOK_FUZZ_DUMP")
    for case, result in _outcomes(fuzz, "fuzz", kind):
        if result["outcome"] in ("accepted", "refused"):
            continue
        where = [result[k] for k in ("raised_at", "studbook_at") if k in result]
        where = " (in studbook: ".join(dict.fromkeys(where)) + (")" if len(set(where)) == 2 else "")
        out.append(f"{case['id']} {case['target']}: {case['what'][:200]}\n"
                   f"    {result['outcome']}: {result.get('detail', '')}" + (f"\n    at {where}" if where else ""))
        if dump:
            Path(dump).mkdir(parents=True, exist_ok=True)
            (Path(dump) / f"{case['id']}--{Path(case['target']).name}").write_bytes(
                base64.b64decode(case["content"]))
    return out


def assert_accepted_or_refused(fuzz: dict, kind: str, label: str) -> None:
    found = failures(fuzz, kind)
    if found:
        pytest.fail(f"{len(found)} of {len(_outcomes(fuzz, 'fuzz', kind))} mutated {label} neither "
                    "accepted nor refused with a StudbookError (STUDBOOK_FUZZ_DUMP=DIR writes each "
                    "mutated file there):\n" + "\n".join(found), pytrace=False)


def test_shipped_files_are_accepted(fuzz):
    """Before any mutation, every entry point accepts the shipped files (else every case
    below would be refused for the same reason, and prove nothing)."""
    bad = {name: outcome for warmup in fuzz["warmups"] for name, outcome in warmup.items()
           if outcome["outcome"] != "accepted"}
    if not fuzz["warmups"] or bad:
        pytest.fail(f"the shipped files are not accepted: {bad}", pytrace=False)


def test_mutated_recipes_are_accepted_or_refused(fuzz):
    """`studbook check NAME` on a mutated recipe or group file: accepted or a StudbookError."""
    assert_accepted_or_refused(fuzz, "recipe", "recipes and group files")


def test_mutated_contracts_are_accepted_or_refused(fuzz):
    """A mutated contract, validated and checked against the task folder, and composed by a
    recipe under `studbook check`: accepted or a StudbookError."""
    assert_accepted_or_refused(fuzz, "contract", "contracts")


def test_mutated_task_yamls_are_accepted_or_refused(fuzz):
    """A mutated task YAML or template, indexed, merged, its metrics derived and the shipped
    contracts checked against it: accepted or a StudbookError."""
    assert_accepted_or_refused(fuzz, "task", "task YAMLs")


def test_refused_hooks_and_bombs_leave_no_trace(fuzz):
    """A file carrying a `!function` hook to code outside the task folder (through each
    bypass the red team found), a Python tag, or an alias bomb is refused within the time
    and memory bounds; and no case at all, fuzz or not, ran the hook module: the sentinel
    file it would write never appears."""
    assert not fuzz["sentinel"].exists(), f"a hook ran: {fuzz['sentinel']} was written"
    wrong = [f"{case['id']} ({case['target']}): {result['outcome']} {result.get('detail', '')}"
             for case, result in _outcomes(fuzz, "trace") if result["outcome"] != "refused"]
    if wrong:
        pytest.fail("not refused:\n" + "\n".join(wrong), pytrace=False)


def test_fuzz_figures(fuzz):
    """The figures for the closing note (`pytest -s` shows them): a few hundred cases ran,
    and the mutations reached both outcomes."""
    results = [r for _, r in _outcomes(fuzz, "fuzz")]
    outcomes = [r["outcome"] for r in results]
    slowest = max(results, key=lambda r: r["ms"])
    figures = {
        "fuzz cases run": len(results),
        "fuzz accepted": outcomes.count("accepted"),
        "fuzz refused with StudbookError": outcomes.count("refused"),
        "fuzz failed (traceback, hang, memory)": len(results) - outcomes.count("accepted") - outcomes.count("refused"),
        "fuzz slowest case ms": f"{slowest['ms']:.0f} ({slowest['id']})",
        "fuzz wall seconds": f"{fuzz['seconds']:.1f} ({WORKERS} worker(s), warm-up included)",
    }
    for kind in COUNTS:
        mine = [r["outcome"] for _, r in _outcomes(fuzz, "fuzz", kind)]
        figures[f"fuzz {kind} cases"] = (f"{len(mine)} ({mine.count('accepted')} accepted, "
                                         f"{mine.count('refused')} refused)")
    print()
    for key, value in figures.items():
        print(f"{key}: {value}")
    assert len(results) == sum(COUNTS.values()) >= 300
    assert outcomes.count("refused") and outcomes.count("accepted")


def test_mutations_are_deterministic(tmp_path):
    """The same seed gives the same cases, byte for byte; a failure can be replayed."""
    repo = make_repo(tmp_path / "repo", tmp_path / "SENTINEL")
    small = {kind: 20 for kind in COUNTS}

    def digest(seed: int = SEED) -> str:
        return hashlib.sha256(repr(make_cases(repo, small, seed)).encode()).hexdigest()

    assert digest() == digest()
    assert digest() != digest(SEED + 1)
