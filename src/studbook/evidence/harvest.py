"""Hard examples: what a family gets wrong on the *mining* split, kept as evidence.

After a generation is evaluated, the mining-split items on which the child or one of
its parents does worst (highest bits per byte) join the hard examples of the contract:
`hard_examples/CONTRACT/NAME.jsonl` holds the set inherited from the parents plus the
new items, deduplicated by item id, each with its provenance (generation, model,
sha256, score). `NAME.yaml` beside it makes the set an lm-eval task. Held-out items are
never harvested: the contract refuses a harvest task that is also a benchmark, and the
task files must read the mining split.

The same evidence feeds children: hard examples and a replay of the items parents score
best on become training data (`data.hard_examples`, `data.replay`).
"""

from __future__ import annotations

import json
from pathlib import Path

from studbook.core.errors import StudbookError

TASK_TEMPLATE = """# Hard examples of contract {contract}, as of generation {name} (written by its record stage).
# Run: lm_eval --model hf --include_path {folder} --tasks {task} ...
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
should_decontaminate: false
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


def read_hard_examples(file: str | Path) -> list[dict]:
    file = Path(file)
    if not file.is_file():
        return []
    with open(file, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def inherited(files: list[Path]) -> list[dict]:
    """The union of the parents' sets, first occurrence of each item id kept."""
    seen, rows = set(), []
    for file in files:
        for row in read_hard_examples(file):
            if row["id"] not in seen:
                seen.add(row["id"])
                rows.append(row)
    return rows


def mining_items(results: dict, task: str) -> dict[str, dict]:
    """id -> item (text, niche) of a harvest task, read from the data file it evaluated."""
    files = results[task]["data_files"]
    data_file = files.get("test") if isinstance(files, dict) else None
    if not data_file or "/mining/" not in str(data_file):
        raise StudbookError(f"harvest task '{task}' reads {data_file}: hard examples come only "
                            "from the mining split", file=results[task]["task_file"])
    with open(data_file, encoding="utf-8") as handle:
        return {row["id"]: row for row in map(json.loads, handle)}


def harvest(name: str, contract: str, child: dict, parents: dict[str, dict], results: dict,
            tasks: list[str], per_task: int, parent_files: list[Path]) -> list[dict]:
    """Inherited set + the `per_task` hardest new items per task.

    `child` and each of `parents` are {"sha256": ..., "samples": {task: rows}}.
    Hardness of an item is the worst (highest) bits per byte any family member scores.
    """
    rows = inherited(parent_files)
    seen = {row["id"] for row in rows}
    family = {name: child, **parents}
    for task in tasks:
        items = mining_items(results, task)
        worst: dict[str, tuple[float, str]] = {}
        for member, facts in family.items():
            for sample in facts["samples"].get(task, []):
                score = sample["bits_per_byte"]
                if sample["id"] not in worst or score > worst[sample["id"]][0]:
                    worst[sample["id"]] = (score, member)
        ranked = sorted(worst.items(), key=lambda kv: (-kv[1][0], kv[0]))
        added = 0
        for item_id, (score, member) in ranked:
            if added == per_task:
                break
            if item_id in seen:
                continue
            item = items[item_id]
            rows.append({"id": item_id, "niche": item.get("niche"), "text": item["text"],
                         "task": task, "provenance": {
                             "generation": name, "model": member,
                             "sha256": family[member]["sha256"],
                             "bits_per_byte": round(score, 6)}})
            seen.add(item_id)
            added += 1
    return rows


def task_name(contract: str, name: str) -> str:
    return f"hard_{contract}_{name}".replace("-", "_")


def write_hard_examples(rows: list[dict], jsonl: Path, task_yaml: Path, contract: str,
                        name: str) -> None:
    from studbook.core.atomic import write_text_atomic

    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    write_text_atomic(jsonl, text)
    write_text_atomic(task_yaml, TASK_TEMPLATE.format(
        contract=contract, name=name, folder=jsonl.parent, task=task_name(contract, name),
        data_file=jsonl))


def retention(hard_rows: list[dict], samples: dict[str, list[dict]]) -> dict | None:
    """Mean bits per byte over the hard examples, from a member's mining-split scores.

    The hard examples are mining items every member of the contract is scored on, so
    this equals what lm-eval reports on the hard-example task (the test checks it).
    """
    wanted = {(row["task"], row["id"]) for row in hard_rows}
    total_bits = total_bytes = 0.0
    found = 0
    for task, rows in samples.items():
        for row in rows:
            if (task, row["id"]) in wanted and "bytes" in row:
                total_bits += row["bits_per_byte"] * row["bytes"]
                total_bytes += row["bytes"]
                found += 1
    if not found:
        return None
    return {"items": found, "bits_per_byte": total_bits / total_bytes}


def best_items(samples: dict[str, list[dict]], tasks: list[str], count: int,
               results: dict) -> list[str]:
    """Texts of the `count` mining items a parent scores best on (replay data)."""
    scored = []
    for task in tasks:
        items = mining_items(results, task)
        for row in samples.get(task, []):
            scored.append((row["bits_per_byte"], task, row["id"], items[row["id"]]["text"]))
    scored.sort()
    return [text for _, _, _, text in scored[:count]]
