"""Devices and processes: one plain process, or the N processes `accelerate launch` starts.

Runtime knobs only (they never enter a recipe or a lock):

- `STUDBOOK_DEVICE`: `cpu` (default), `cuda`, `cuda:N` or `mps`; a device that is not
  there is refused before any compute.
- `STUDBOOK_LAUNCHER`: a launcher command a model stage re-executes itself under, e.g.
  `accelerate launch --config_file launch/cpu_ddp.yaml` — so `dvc repro` trains across
  processes or GPUs while dvc.yaml keeps its plain `python stages/breed.py NAME`.

Training and evaluation place models through Accelerate (`accelerator()`); with one
process on the CPU it adds nothing to the arithmetic, so the weights are the ones a plain
loop gives. Under a launcher, `WORLD_SIZE` and `RANK` tell the processes apart: only the
main process writes outputs and prints.
"""

from __future__ import annotations

import os
import shlex
import sys
from functools import lru_cache

from studbook.core.errors import StudbookError

DEVICES = ("cpu", "cuda", "mps")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def requested_device() -> str:
    return os.environ.get("STUDBOOK_DEVICE", "cpu")


def check_device(device: str | None = None) -> str:
    """The requested device, if this machine has it; else an error naming the knob."""
    device = device or requested_device()
    kind, _, index = device.partition(":")
    if kind not in DEVICES or (index and not index.isdigit()) or (index and kind != "cuda"):
        raise StudbookError(f"STUDBOOK_DEVICE={device!r}: not a device (cpu, cuda, cuda:N, mps)",
                            key="STUDBOOK_DEVICE")
    if kind == "cpu":
        return device
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (index and int(index) >= count):
            raise StudbookError(f"STUDBOOK_DEVICE={device!r}, but this machine has "
                                f"{count} CUDA device(s)", key="STUDBOOK_DEVICE")
    elif not torch.backends.mps.is_available():
        raise StudbookError("STUDBOOK_DEVICE='mps', but MPS is not available here",
                            key="STUDBOOK_DEVICE")
    return device


@lru_cache(maxsize=1)
def accelerator():
    """This process's Accelerator (one per process, as Accelerate requires)."""
    from accelerate import Accelerator

    device = check_device()
    if device.startswith("cuda:") and world_size() == 1:
        import torch

        torch.cuda.set_device(int(device.split(":")[1]))
    # mixed precision stays "no": the recipe's `precision` autocasts inside the training
    # step itself, so one code path gives the same arithmetic on every device
    return Accelerator(cpu=device == "cpu", mixed_precision="no")


def device():
    """The torch device this process computes on."""
    return accelerator().device


def wait() -> None:
    """All processes reach this point before any goes on (no-op for one process)."""
    if world_size() > 1:
        accelerator().wait_for_everyone()


def broadcast(value):
    """The main process's `value`, in every process (picklable values)."""
    if world_size() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    accelerator()  # the process group exists once this process's Accelerator does
    return broadcast_object_list([value if is_main() else None], from_process=0)[0]


def relaunch(script: str, args: list[str]) -> None:
    """Re-execute this stage under `STUDBOOK_LAUNCHER`, unless already launched."""
    launcher = os.environ.get("STUDBOOK_LAUNCHER", "").strip()
    if not launcher or "WORLD_SIZE" in os.environ:
        return
    argv = [*shlex.split(launcher), script, *args]
    print(f"launcher: {' '.join(argv)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os.execvp(argv[0], argv)
