"""Training: a plain, seeded single-process loop over byte windows of the corpus.

Bounded by optimizer steps (the budget that goes into the recipe) with an optional
wall-clock cap. Loss and throughput go to dvclive so `dvc plots show` draws the curve.
The launcher (plain process or `accelerate launch`) is a runtime choice, never a
recipe key.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import read_split
from .runtime import progress
from .tokenizer import EOS_ID, encode_bytes


@dataclass(frozen=True)
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float  # mean cross-entropy of the last logged window, nats per token
    capped: bool  # stopped by max_seconds before the step budget

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def token_stream(corpus_dir: str | Path, split: str, niches: list[str] | None) -> np.ndarray:
    """All documents of a split as one id stream, each preceded by end-of-text."""
    parts = []
    for record in read_split(corpus_dir, split):
        if niches is None or record["niche"] in niches:
            parts.append(np.array([EOS_ID], dtype=np.int64))
            parts.append(encode_bytes(record["text"]))
    if not parts:
        raise ValueError(f"no training text in split '{split}' for niches {niches}")
    return np.concatenate(parts).astype(np.uint16)


def lr_at(step: int, spec) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio x peak."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    span = max(1, spec.steps - spec.warmup_steps)
    progress_ratio = min(1.0, (step - spec.warmup_steps) / span)
    floor = spec.lr * spec.min_lr_ratio
    return floor + (spec.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress_ratio))


def train(model, stream: np.ndarray, spec, context_length: int, seed: int,
          live=None) -> TrainResult:
    """Train `model` in place on random windows of `stream`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(stream.astype(np.int64))
    window = context_length + 1
    if len(data) <= window:
        raise ValueError(f"corpus of {len(data)} tokens is shorter than one window ({window})")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr, betas=tuple(spec.betas), fused=False, foreach=True,
    )
    model.train()
    offsets = torch.arange(window)
    start = time.perf_counter()
    tokens, done, running, capped = 0, 0, [], False
    final_loss = float("nan")
    for step in range(spec.steps):
        if spec.max_seconds and time.perf_counter() - start > spec.max_seconds:
            capped = True
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, spec)
        starts = torch.randint(0, len(data) - window, (spec.batch_size,), generator=generator)
        batch = data[starts[:, None] + offsets]
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        optimizer.step()
        tokens += batch.size(0) * context_length
        done += 1
        running.append(loss.item())
        if (step + 1) % spec.log_every == 0 or step + 1 == spec.steps:
            elapsed = time.perf_counter() - start
            final_loss = sum(running) / len(running)
            running = []
            progress(f"train step {step + 1}/{spec.steps} loss {final_loss:.4f} "
                     f"({final_loss / math.log(2):.3f} bits/byte) {tokens / elapsed:,.0f} tok/s")
            if live is not None:
                live.log_metric("train/loss", final_loss)
                live.log_metric("train/bits_per_byte", final_loss / math.log(2))
                live.log_metric("train/tokens_per_second", tokens / elapsed)
                live.log_metric("train/lr", lr_at(step, spec))
                live.next_step()
    if running:
        final_loss = sum(running) / len(running)
    seconds = time.perf_counter() - start
    model.eval()
    return TrainResult(steps=done, tokens=tokens, seconds=seconds,
                       final_loss=final_loss, capped=capped)


def flops_estimate(parameters: int, tokens: int) -> float:
    """Training FLOPs, the usual 6 x parameters x tokens (forward + backward)."""
    return 6.0 * parameters * tokens
