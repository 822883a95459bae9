"""Benchmark items built from a corpus split: bits per byte and next-line choice.

Items are chosen by hash, not by a random draw over a list, so adding one file to the
corpus changes only the items near it. The held-out split feeds the contract's
benchmarks; the mining split feeds hard-example harvest (never the other way round).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from studbook.core.atomic import atomic_dir, canonical_json
from studbook.evidence.data import read_split


class BenchmarkParams(BaseModel):
    """`benchmarks:` in params.yaml."""

    model_config = ConfigDict(extra="forbid")

    splits: list[str] = Field(description="corpus splits to build items for")
    chunk_bytes: int = Field(gt=64, description="max bytes of one bits-per-byte item")
    bpb_items_per_niche: int = Field(gt=0)
    nextline_items_per_niche: int = Field(gt=0)
    nextline_context_bytes: int = Field(gt=16, description="max bytes of code before the line")
    nextline_choices: int = Field(ge=2, le=8)
    min_line_chars: int = Field(default=12, ge=1, description="shorter lines are never asked")
    seed: int = 0


def _key(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()


def chunk_lines(text: str, max_bytes: int) -> list[str]:
    """Cut text at line ends into chunks of at most `max_bytes` UTF-8 bytes."""
    chunks, current, size = [], [], 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode())
        if n > max_bytes:
            continue  # a single giant line (data blob) makes a poor item
        if size + n > max_bytes and current:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += n
    if current:
        chunks.append("".join(current))
    return [c for c in chunks if len(c.strip()) >= 64]


def bpb_items(records: list[dict], params: BenchmarkParams) -> dict[str, list[dict]]:
    by_niche: dict[str, list[dict]] = {}
    for rec in records:
        for index, chunk in enumerate(chunk_lines(rec["text"], params.chunk_bytes)):
            item_id = _key(params.seed, rec["path"], index)[:16]
            by_niche.setdefault(rec["niche"], []).append(
                {"id": item_id, "niche": rec["niche"], "path": rec["path"], "text": chunk}
            )
    return {
        niche: sorted(items, key=lambda i: i["id"])[: params.bpb_items_per_niche]
        for niche, items in sorted(by_niche.items())
    }


def nextline_items(records: list[dict], params: BenchmarkParams) -> dict[str, list[dict]]:
    by_niche: dict[str, list[dict]] = {}
    for rec in records:
        lines = rec["text"].splitlines(keepends=True)
        candidates = sorted(
            {line for line in lines if len(line.strip()) >= params.min_line_chars}
        )
        if len(candidates) < params.nextline_choices + 1:
            continue
        for position in range(3, len(lines)):
            answer = lines[position]
            if len(answer.strip()) < params.min_line_chars or not answer.endswith("\n"):
                continue
            context_lines: list[str] = []
            size = 0
            for line in reversed(lines[:position]):
                size += len(line.encode())
                if size > params.nextline_context_bytes:
                    break
                context_lines.insert(0, line)
            context = "".join(context_lines)
            if len(context.strip()) < 32:
                continue
            item_id = _key(params.seed, rec["path"], position)[:16]
            by_niche.setdefault(rec["niche"], []).append(
                {"id": item_id, "rec": rec, "candidates": candidates, "answer": answer,
                 "context": context, "position": position}
            )
    out: dict[str, list[dict]] = {}
    for niche, items in sorted(by_niche.items()):
        chosen = sorted(items, key=lambda i: i["id"])[: params.nextline_items_per_niche]
        built = []
        for item in chosen:
            rng = random.Random(item["id"])
            pool = [c for c in item["candidates"] if c.strip() != item["answer"].strip()]
            distractors = rng.sample(pool, params.nextline_choices - 1)
            label = rng.randrange(params.nextline_choices)
            choices = distractors[:label] + [item["answer"]] + distractors[label:]
            built.append({
                "id": item["id"], "niche": niche, "path": item["rec"]["path"],
                "line": item["position"] + 1, "context": item["context"],
                "choices": choices, "label": label,
            })
        out[niche] = built
    return out


def _write_jsonl(path: Path, items: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")


def build_benchmarks(corpus_dir: str | Path, params: BenchmarkParams, out_dir: str | Path) -> dict:
    """Write `<split>/bpb_<niche>.jsonl` and `<split>/nextline_<niche>.jsonl`."""
    summary: dict[str, dict[str, dict[str, int]]] = {}
    with atomic_dir(out_dir) as tmp:
        for split in params.splits:
            records = read_split(corpus_dir, split)
            (tmp / split).mkdir()
            counts: dict[str, dict[str, int]] = {}
            for kind, items_by_niche in (("bpb", bpb_items(records, params)),
                                         ("nextline", nextline_items(records, params))):
                for niche, items in items_by_niche.items():
                    _write_jsonl(tmp / split / f"{kind}_{niche}.jsonl", items)
                    counts.setdefault(niche, {})[kind] = len(items)
            summary[split] = counts
        (tmp / "summary.json").write_text(canonical_json(summary), encoding="utf-8")
    return summary
