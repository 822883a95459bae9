"""Train to a target: compute-to-target, the figure that shows whether breeding compounds.

A train budget may name a target — bits per byte on an lm-eval `loglikelihood_rolling`
task (a mining task, so the held-out benchmarks stay unseen) — that is checked every
`every` steps; training stops at the first check that reaches it. The generation then
records how many steps, tokens and seconds it took. A child bred from a parent and a
model trained from scratch to the same target compare on their cards.

The check is a plain batched forward pass over lm-eval's rolling windows (prefix token,
context length 1), the same numbers lm-eval computes for that task
(`bench/eval_overhead.py` compares both on the same items), without lm-eval's per-call
set-up inside the training loop.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from studbook.core.errors import StudbookError


def rolling_windows(ids: list[int], prefix: int, max_length: int) -> list[tuple[list[int], int]]:
    """lm-eval's rolling windows with context_len 1: (tokens, how many trailing targets count).

    Each window's inputs are tokens[:-1] and its targets tokens[1:]; only the last
    `count` targets are new (earlier ones were scored by the previous window).
    """
    tokens = [prefix] + ids
    windows, predicted = [], 0
    while predicted < len(ids):
        end = min(predicted + max_length, len(ids))
        start = max(0, end - max_length)
        windows.append((tokens[start:end + 1], end - predicted))
        predicted = end
    return windows


def bits_per_byte(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> float:
    """Pooled bits per byte of `texts` (total nats / ln 2 / total UTF-8 bytes), like lm-eval."""
    import torch

    prefix = tokenizer.eos_token_id
    jobs = []
    for text in texts:
        jobs.extend(rolling_windows(tokenizer(text, add_special_tokens=False)["input_ids"],
                                    prefix, max_length))
    jobs.sort(key=lambda job: -len(job[0]))  # longest first, as lm-eval orders: little padding
    nats = 0.0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for first in range(0, len(jobs), batch_size):
            chunk = jobs[first:first + batch_size]
            width = len(chunk[0][0]) - 1
            inputs = torch.zeros(len(chunk), width, dtype=torch.long)
            for row, (window, _) in enumerate(chunk):
                inputs[row, :len(window) - 1] = torch.tensor(window[:-1])
            logprobs = torch.log_softmax(model(input_ids=inputs.to(device), use_cache=False).logits.float(),
                                         dim=-1).cpu()
            for row, (window, counted) in enumerate(chunk):
                targets = torch.tensor(window[1:])
                picked = logprobs[row, :len(targets)].gather(1, targets[:, None])[:, 0]
                nats -= picked[len(targets) - counted:].sum().item()
    return nats / math.log(2) / sum(len(text.encode("utf-8")) for text in texts)


def task_texts(task: str, task_dir, items: int | None = None,
               where: str | None = None) -> list[str]:
    """The documents of a local lm-eval rolling task (its `test` JSONL, field `doc_to_target`)."""
    from studbook.evidence.tasks import root_of, task_config, task_index

    known = task_index(task_dir)
    if task not in known:
        raise StudbookError(f"no lm-eval task '{task}' under {task_dir}", file=where, key="target.task")
    data, _ = task_config(known[task], root_of(known[task], task_dir))
    if data.get("output_type") != "loglikelihood_rolling":
        raise StudbookError(f"target task '{task}' is not a loglikelihood_rolling (bits per byte) task",
                            file=where, key="target.task")
    field = data.get("doc_to_target")
    files = data.get("dataset_kwargs", {}).get("data_files", {})
    if not isinstance(field, str) or "{" in field or "test" not in files:
        raise StudbookError(f"target task '{task}' must read a local JSONL `test` file and name its "
                            "text field in doc_to_target", file=str(known[task]), key="doc_to_target")
    path = Path(files["test"])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [row[field] for row in rows]
    return texts[:items] if items else texts


class TargetProbe:
    """`should_stop` for training: checks the target every `spec.every` steps, keeps the curve."""

    def __init__(self, spec, texts: list[str], tokenizer, max_length: int, batch_size: int = 16):
        self.spec, self.texts, self.tokenizer = spec, texts, tokenizer
        self.max_length, self.batch_size = max_length, batch_size
        self.curve: list[dict[str, Any]] = []
        self.reached_at: dict[str, Any] | None = None
        self.seconds = 0.0  # spent checking (not training)
        self.model = None

    def __call__(self, step: int, tokens: int) -> bool:
        if step % self.spec.every:
            return False
        start = time.perf_counter()
        self.model.eval()
        value = bits_per_byte(self.model, self.tokenizer, self.texts, self.batch_size, self.max_length)
        self.model.train()
        self.seconds += time.perf_counter() - start
        point = {"step": step, "tokens": tokens, "bits_per_byte": round(value, 6)}
        self.curve.append(point)
        if value <= self.spec.bits_per_byte:
            self.reached_at = point
            return True
        return False

    def record(self) -> dict[str, Any]:
        """What the artifact's metadata keeps (no wall-clock figures: those vary run to run)."""
        return {"task": self.spec.task, "bits_per_byte": self.spec.bits_per_byte,
                "every": self.spec.every, "items": len(self.texts),
                "reached": self.reached_at is not None,
                "steps": self.reached_at["step"] if self.reached_at else None,
                "tokens": self.reached_at["tokens"] if self.reached_at else None,
                "curve": self.curve}
