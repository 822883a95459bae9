"""Training: a seeded loop over token windows of packed documents, through Accelerate.

Bounded by optimizer steps (the budget that goes into the recipe) with an optional
wall-clock cap. Accelerate places the model, the teacher and each batch on the runtime's
device and, under `accelerate launch`, wraps the model in DDP: every process draws the
same global batch from the seeded generator and trains on its own slice of it, so the
recipe's `batch_size` is the global batch on any number of processes and one CPU process
gives exactly the weights a plain loop gives. Loss, bits per byte (from the packed text's
bytes, not its tokens) and the learning rate go to dvclive against the optimizer step (its
`step` column), so `dvc plots show` draws the curve over the steps trained. Progress is one
bar on a terminal (a line per tenth of the steps in a pipe) with the loss, the throughput
and an ETA; it reads the clock only. The launcher is a runtime choice, never a recipe key.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from studbook.core.progress import Progress
from studbook.operators.packing import Stream

_LN2 = math.log(2)


@dataclass(frozen=True)
class TrainResult:
    steps: int
    tokens: int  # summed over processes
    seconds: float
    final_loss: float  # mean cross-entropy of the last logged window, nats per token
    capped: bool  # stopped by max_seconds before the step budget
    stopped: bool = False  # stopped early by should_stop (a target reached)
    final_bits_per_byte: float = float("nan")  # the same window, per byte of text
    tokens_per_process: tuple[int, ...] = ()

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def lr_at(step: int, spec) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio x peak."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    span = max(1, spec.steps - spec.warmup_steps)
    progress_ratio = min(1.0, (step - spec.warmup_steps) / span)
    floor = spec.lr * spec.min_lr_ratio
    return floor + (spec.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress_ratio))


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

    `stream` is one packed `Stream`, or a list of (Stream, fraction) sources: each sequence
    of a batch then comes from a source drawn with those probabilities (seeded). With a
    `teacher`, the loss is the distillation loss of `distill` (temperature, kl_weight);
    `final_loss` stays the cross-entropy so runs compare. Only parameters that require
    gradients are trained (a PEFT model trains its adapter only). `should_stop(steps, tokens)`
    is asked after every step (a target check, on the main process); its own time is not
    training time.
    """
    import torch

    from studbook.core import launch

    accelerator = launch.accelerator()
    processes, rank = accelerator.num_processes, accelerator.process_index
    if spec.batch_size % processes:
        from studbook.core.errors import StudbookError

        raise StudbookError(f"batch_size {spec.batch_size} does not split evenly over {processes} "
                            "processes (the recipe's batch is the global batch)", key="train.batch_size")
    share = spec.batch_size // processes
    generator = torch.Generator().manual_seed(seed)  # the same draws in every process
    window = context_length + 1
    sources = [(stream, 1.0)] if isinstance(stream, Stream) else [s for s in stream if s[1] > 0]
    datas = [torch.from_numpy(s.ids.astype(np.int64)) for s, _ in sources]
    bytes_per_token = [s.bytes_per_token for s, _ in sources]
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
    wrapped, optimizer = accelerator.prepare(model, optimizer)  # DDP under a launcher
    if teacher is not None:
        teacher.to(accelerator.device)
        teacher.eval()  # no dropout in the targets
    offsets = torch.arange(window)

    def losses(batch):
        logits = wrapped(input_ids=batch[:, :-1], use_cache=False).logits
        if teacher is None:
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))
            return ce, ce
        with torch.no_grad():
            teacher_logits = teacher(input_ids=batch[:, :-1], use_cache=False).logits
        return distillation_loss(logits, teacher_logits, batch[:, 1:], distill.temperature, distill.kl_weight)

    # bf16-mixed: matmuls in bfloat16 (AMX or AVX512-BF16 on recent CPUs, tensor cores on a
    # GPU), weights, optimizer state and the loss in float32. compile: TorchInductor fuses
    # the elementwise work (norms, rotary, activations) that dominates a small model's step.
    compute_loss = torch.compile(losses, dynamic=False) if spec.compile else losses

    def autocast(device_type: str):
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=spec.precision == "bf16-mixed")

    start = time.perf_counter()
    tokens, done, capped, stopped, paused = 0, 0, False, False, 0.0
    window_ce, window_bytes, window_steps = 0.0, 0.0, 0  # the logged window, this process
    final_loss = final_bpb = float("nan")
    report, note = Progress("train step", spec.steps), ""
    for step in range(spec.steps):
        if spec.max_seconds and time.perf_counter() - start - paused > spec.max_seconds:
            capped = True
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, spec)
        batch, rows = _batch(datas, probabilities, spec.batch_size, window, offsets, generator)
        batch = batch[rank * share:(rank + 1) * share].to(accelerator.device)
        mine = rows[rank * share:(rank + 1) * share]
        with autocast(accelerator.device.type):
            loss, ce = compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, spec.grad_clip)
        optimizer.step()
        tokens += share * context_length
        done += 1
        window_ce += ce.item() * share * context_length
        window_bytes += sum(bytes_per_token[r] for r in mine) * context_length
        window_steps += 1
        if (step + 1) % spec.log_every == 0 or step + 1 == spec.steps:
            final_loss, final_bpb = _window(accelerator, window_ce, window_bytes, window_steps,
                                            spec.batch_size * context_length)
            window_ce, window_bytes, window_steps = 0.0, 0.0, 0
            elapsed = time.perf_counter() - start - paused
            note = (f"loss {final_loss:.4f} ({final_bpb:.3f} bits/byte), "
                    f"{tokens * processes / elapsed:,.0f} tok/s")
            if live is not None:  # no throughput here: the log is a DVC output, kept deterministic
                live.step = step + 1  # x of `dvc plots`: the optimizer step, not the log's row
                live.log_metric("train/loss", final_loss)
                live.log_metric("train/bits_per_byte", final_bpb)
                live.log_metric("train/lr", lr_at(step, spec))
                live.next_step()
        report.update(step + 1, note)
        if should_stop is not None:
            asked = time.perf_counter()
            stopped = launch.broadcast(should_stop(step + 1, tokens * processes) if launch.is_main() else None)
            paused += time.perf_counter() - asked
            if stopped:
                break
    report.close()
    if window_steps:
        final_loss, final_bpb = _window(accelerator, window_ce, window_bytes, window_steps,
                                        spec.batch_size * context_length)
    seconds = time.perf_counter() - start - paused
    per_process = tuple(int(t) for t in accelerator.gather(
        torch.tensor([tokens], device=accelerator.device)).tolist())
    accelerator.free_memory()  # drops the DDP wrapper and optimizer; `model` is trained in place
    model.eval()
    return TrainResult(steps=done, tokens=sum(per_process), seconds=seconds,
                       final_loss=final_loss, capped=capped, stopped=stopped,
                       final_bits_per_byte=final_bpb, tokens_per_process=per_process)


def _window(accelerator, ce_nats: float, text_bytes: float, steps: int, tokens_per_step: int):
    """Mean cross-entropy per token and bits per byte over a logged window, all processes."""
    import torch

    total = torch.tensor([ce_nats, text_bytes], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total, "sum")
    ce_nats, text_bytes = total.tolist()
    loss = ce_nats / (steps * tokens_per_step)
    return loss, ce_nats / _LN2 / text_bytes if text_bytes else float("nan")


def _batch(datas, probabilities, batch_size: int, window: int, offsets, generator):
    """`batch_size` windows and the source each came from."""
    import torch

    if len(datas) == 1:  # one source: no draw, so single-source runs keep their exact stream
        data = datas[0]
        starts = torch.randint(0, len(data) - window, (batch_size,), generator=generator)
        return data[starts[:, None] + offsets], [0] * batch_size
    choice = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator).tolist()
    rows = []
    for source in choice:
        data = datas[source]
        start = torch.randint(0, len(data) - window, (1,), generator=generator)
        rows.append(data[start + offsets])
    return torch.stack(rows), choice


def flops_estimate(parameters: int, tokens: int) -> float:
    """Training FLOPs, the usual 6 x parameters x tokens (forward + backward)."""
    return 6.0 * parameters * tokens
