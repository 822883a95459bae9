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

from studbook.evidence.data import read_split
from studbook.core.runtime import progress
from studbook.operators.tokenizer import EOS_ID, encode_bytes


@dataclass(frozen=True)
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    final_loss: float  # mean cross-entropy of the last logged window, nats per token
    capped: bool  # stopped by max_seconds before the step budget
    stopped: bool = False  # stopped early by should_stop (a target reached)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def token_stream(corpus_dir: str | Path, split: str, niches: list[str] | None) -> np.ndarray:
    """All documents of a split as one id stream, each preceded by end-of-text."""
    stream = texts_stream([record["text"] for record in read_split(corpus_dir, split)
                           if niches is None or record["niche"] in niches])
    if not len(stream):
        raise ValueError(f"no training text in split '{split}' for niches {niches}")
    return stream


def lr_at(step: int, spec) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio x peak."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    span = max(1, spec.steps - spec.warmup_steps)
    progress_ratio = min(1.0, (step - spec.warmup_steps) / span)
    floor = spec.lr * spec.min_lr_ratio
    return floor + (spec.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress_ratio))


def texts_stream(texts: list[str]) -> np.ndarray:
    """Short documents (hard examples, replayed items) as one id stream."""
    parts = []
    for text in texts:
        parts += [np.array([EOS_ID], dtype=np.int64), encode_bytes(text)]
    return np.concatenate(parts).astype(np.uint16) if parts else np.zeros(0, dtype=np.uint16)


def distillation_loss(student_logits, teacher_logits, targets, temperature: float,
                      kl_weight: float):
    """kl_weight * T^2 * KL(teacher_T || student_T) + (1 - kl_weight) * CE, per token (nats)."""
    import torch.nn.functional as F

    vocab = student_logits.size(-1)
    student = student_logits.reshape(-1, vocab).float()
    teacher = teacher_logits.reshape(-1, vocab).float()
    ce = F.cross_entropy(student, targets.reshape(-1))
    kl = F.kl_div(F.log_softmax(student / temperature, dim=-1),
                  F.log_softmax(teacher / temperature, dim=-1),
                  log_target=True, reduction="batchmean") * temperature ** 2
    return kl_weight * kl + (1 - kl_weight) * ce, ce


def train(model, stream, spec, context_length: int, seed: int,
          live=None, teacher=None, distill=None, should_stop=None) -> TrainResult:
    """Train `model` in place on random windows of `stream`.

    `stream` is one id array, or a list of (array, fraction) sources: each sequence of a
    batch then comes from a source drawn with those probabilities (seeded). With a
    `teacher`, the loss is the distillation loss of `distill` (temperature, kl_weight);
    `final_loss` stays the cross-entropy so runs compare. Only parameters that require
    gradients are trained (a PEFT model trains its adapter only). `should_stop(steps, tokens)`
    is asked after every step (a target check); its own time is not training time.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    window = context_length + 1
    sources = [(stream, 1.0)] if isinstance(stream, np.ndarray) else [s for s in stream if s[1] > 0]
    datas = [torch.from_numpy(s.astype(np.int64)) for s, _ in sources]
    for data in datas:
        if len(data) <= window:
            raise ValueError(f"a training source of {len(data)} tokens is shorter than one window ({window})")
    probabilities = torch.tensor([f for _, f in sources], dtype=torch.float64)
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.dim() >= 2]
    no_decay = [p for p in trainable if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr, betas=tuple(spec.betas), fused=False, foreach=True,
    )
    model.train()
    if teacher is not None:
        teacher.eval()  # no dropout in the targets
    offsets = torch.arange(window)

    def losses(batch):
        logits = model(input_ids=batch[:, :-1], use_cache=False).logits
        if teacher is None:
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))
            return ce, ce
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch[:, :-1], use_cache=False).logits
        return distillation_loss(logits, teacher_logits, batch[:, 1:], distill.temperature, distill.kl_weight)

    # bf16-mixed: matmuls in bfloat16 (AMX or AVX512-BF16 on recent CPUs), weights, optimizer
    # state and the loss in float32. compile: TorchInductor fuses the elementwise work
    # (norms, rotary, activations) that dominates a small model's step on a CPU.
    compute_loss = torch.compile(losses, dynamic=False) if spec.compile else losses

    def autocast(device_type: str):
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=spec.precision == "bf16-mixed")

    start = time.perf_counter()
    tokens, done, running, capped, stopped, paused = 0, 0, [], False, False, 0.0
    final_loss = float("nan")
    for step in range(spec.steps):
        if spec.max_seconds and time.perf_counter() - start - paused > spec.max_seconds:
            capped = True
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, spec)
        batch = _batch(datas, probabilities, spec.batch_size, window, offsets, generator)
        with autocast(batch.device.type):
            loss, ce = compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, spec.grad_clip)
        optimizer.step()
        tokens += batch.size(0) * context_length
        done += 1
        running.append(ce.item())
        if (step + 1) % spec.log_every == 0 or step + 1 == spec.steps:
            elapsed = time.perf_counter() - start - paused
            final_loss = sum(running) / len(running)
            running = []
            progress(f"train step {step + 1}/{spec.steps} loss {final_loss:.4f} "
                     f"({final_loss / math.log(2):.3f} bits/byte) {tokens / elapsed:,.0f} tok/s")
            if live is not None:  # no throughput here: the log is a DVC output, kept deterministic
                live.log_metric("train/loss", final_loss)
                live.log_metric("train/bits_per_byte", final_loss / math.log(2))
                live.log_metric("train/lr", lr_at(step, spec))
                live.next_step()
        if should_stop is not None:
            asked = time.perf_counter()
            stopped = should_stop(step + 1, tokens)
            paused += time.perf_counter() - asked
            if stopped:
                break
    if running:
        final_loss = sum(running) / len(running)
    seconds = time.perf_counter() - start - paused
    model.eval()
    return TrainResult(steps=done, tokens=tokens, seconds=seconds,
                       final_loss=final_loss, capped=capped, stopped=stopped)


def _batch(datas, probabilities, batch_size: int, window: int, offsets, generator):
    import torch

    if len(datas) == 1:  # one source: no draw, so single-source runs keep their exact stream
        data = datas[0]
        starts = torch.randint(0, len(data) - window, (batch_size,), generator=generator)
        return data[starts[:, None] + offsets]
    choice = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator)
    rows = []
    for source in choice.tolist():
        data = datas[source]
        start = torch.randint(0, len(data) - window, (1,), generator=generator)
        rows.append(data[start + offsets])
    return torch.stack(rows)


def flops_estimate(parameters: int, tokens: int) -> float:
    """Training FLOPs, the usual 6 x parameters x tokens (forward + backward)."""
    return 6.0 * parameters * tokens
