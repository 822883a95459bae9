"""A synthetic studbook history for lineage tests and the lineage bench.

`git fast-import` writes N generations in well under a second: each generation is a
commit adding `cards/gK.json` (a minimal card: weights sha256, parents by sha256, verdict,
scores, compute); every `merge_every`-th generation is bred on a side branch and arrives
through a merge commit, as a pull request would.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path


def sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def card(index: int, parents: list[int], rng: random.Random) -> dict:
    name = f"g{index}"
    return {
        "name": name, "weights_sha256": sha(name), "kind": "model",
        "method": "scratch" if not parents else rng.choice(["ties", "lora", "distill", "linear"]),
        "verdict": "promoted" if index == 0 or rng.random() < 0.8 else "rejected",
        "contract": "synthetic",
        "parents": ([{"name": f"g{p}", "sha256": sha(f'g{p}')} for p in parents]
                    or [{"name": "uniform-byte", "sha256": None, "reference": True}]),
        "primary": {"child": round(8 - index * 0.001, 6), "net_gain": {"mean": 0.01}},
        "compute": {"tokens": 1000, "flops": 6e9, "seconds": 1.0},
    }


def synthetic_history(repo: Path, generations: int, merge_every: int = 10, seed: int = 0) -> dict:
    """Create the repository; returns {name: [parent names]} for checking edges."""
    rng = random.Random(seed)
    repo.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    stream, edges, mark, main_tip = [], {}, 0, None
    for index in range(generations):
        parents = [] if index == 0 else sorted(rng.sample(range(max(0, index - 20), index),
                                                          k=min(index, rng.choice([1, 1, 2, 3]))))
        edges[f"g{index}"] = [f"g{p}" for p in parents]
        body = json.dumps(card(index, parents, rng), sort_keys=True).encode()
        on_side = main_tip is not None and index % merge_every == 0
        mark += 1
        stream.append(f"commit refs/heads/{'side' if on_side else 'main'}\nmark :{mark}\n"
                      f"author Breeder {index % 3} <b{index % 3}@studbook.invalid> {1700000000 + index} +0000\n"
                      f"committer Breeder <b@studbook.invalid> {1700000000 + index} +0000\n"
                      f"data {len(f'g{index}: bred')}\ng{index}: bred\n")
        if main_tip is not None:
            stream.append(f"from :{main_tip}\n")
        stream.append(f"M 644 inline cards/g{index}.json\ndata {len(body)}\n")
        stream.append(body.decode() + "\n")
        if on_side:  # arrives through a merge, like a pull request
            side = mark
            mark += 1
            message = f"Merge pull request #{index}"
            stream.append(f"commit refs/heads/main\nmark :{mark}\n"
                          f"committer Reviewer <r@studbook.invalid> {1700000000 + index} +0000\n"
                          f"data {len(message)}\n{message}\nfrom :{main_tip}\nmerge :{side}\n"
                          f"M 644 inline cards/g{index}.json\ndata {len(body)}\n{body.decode()}\n")
        main_tip = mark
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input="".join(stream).encode(), check=True)
    subprocess.run(["git", "reset", "-q", "--hard", "main"], cwd=repo, check=True)
    return edges
