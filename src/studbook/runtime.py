"""Runtime knobs: how to run, never what to build.

Device, threads and verbosity come from the environment (STUDBOOK_DEVICE,
STUDBOOK_THREADS) so they never enter a recipe or dvc.lock: moving a generation to
another machine does not re-breed it.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def offline() -> None:
    """Nothing this process does may reach the network."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def device() -> str:
    return os.environ.get("STUDBOOK_DEVICE", "cpu")


def setup_torch(seed: int | None = None) -> None:
    import torch

    threads = os.environ.get("STUDBOOK_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    if seed is not None:
        torch.manual_seed(seed)


def summary(values: Mapping[str, object], stream=None) -> None:
    """The greppable `key: value` block every stage ends with."""
    stream = stream or sys.stdout
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key}: {value}", file=stream)
    stream.flush()


def progress(message: str) -> None:
    from .failpoints import reached

    print(message, file=sys.stderr, flush=True)
    reached("say", message)


def run_stage(stage, argv: list[str] | None = None) -> None:
    """Entry point of a generation stage script: `python stages/<kind>.py NAME`.

    Goes offline, runs `stage(NAME)`, prints its summary; user errors (StudbookError)
    exit with the message naming file and key, not a traceback.
    """
    from .errors import StudbookError

    offline()
    args = sys.argv[1:] if argv is None else argv
    usage = f"usage: python stages/{stage.__name__}.py NAME\n{(stage.__doc__ or '').strip()}"
    if args in (["-h"], ["--help"]):
        print(usage)
        return
    if len(args) != 1:
        print(usage, file=sys.stderr)
        sys.exit(2)
    try:
        summary(stage(args[0]))
    except StudbookError as exc:
        sys.exit(f"error: {exc}")
