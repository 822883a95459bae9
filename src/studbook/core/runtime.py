"""Runtime knobs: how to run, never what to build.

Device, threads, launcher and verbosity come from the environment (STUDBOOK_DEVICE,
STUDBOOK_THREADS, STUDBOOK_LAUNCHER; see `core.launch`) so they never enter a recipe or
dvc.lock: moving a generation to another machine does not re-breed it.
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


# Stages report their own progress (`core.progress`: one bar, or a few lines in a pipe,
# with an ETA) and a summary; the libraries' own bars (weights loaded, splits generated,
# lm-eval's contexts built per task) are noise. STUDBOOK_VERBOSE=1 keeps them.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' loading bars follow huggingface_hub's switch
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",  # tqdm's own default for `disable`, read when tqdm is imported
}


def offline() -> None:
    """Nothing this process does may reach the network."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def device() -> str:
    return os.environ.get("STUDBOOK_DEVICE", "cpu")


def summary(values: Mapping[str, object], stream=None) -> None:
    """The greppable `key: value` block every stage ends with."""
    if os.environ.get("RANK", "0") != "0":  # under a launcher only the main process reports
        return
    stream = stream or sys.stdout
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key}: {value}", file=stream)
    stream.flush()


def progress(message: str) -> None:
    from studbook.core.failpoints import reached

    if os.environ.get("RANK", "0") != "0":
        return
    print(message, file=sys.stderr, flush=True)
    reached("say", message)


def entry(module, argv: list[str] | None, takes_name: bool) -> list[str] | None:
    """Offline, numerics pinned, arguments checked; None when only help was asked for."""
    from studbook.core.numerics import pin_process

    from studbook.core.progress import verbose

    offline()
    for key, value in ({} if verbose() else QUIET_ENV).items():
        os.environ.setdefault(key, value)
    kind = module.__name__.rsplit(".", 1)[-1]
    args = sys.argv[1:] if argv is None else argv
    usage = (f"usage: python stages/{kind}.py{' NAME' if takes_name else ''}\n"
             f"{(module.__doc__ or '').strip()}")
    if args in (["-h"], ["--help"]):
        print(usage)
        return None
    if len(args) != int(takes_name):
        print(usage, file=sys.stderr)
        sys.exit(2)
    pin_process()  # before anything imports torch
    return args


def out_of_space(exc: Exception) -> str | None:
    """The message for a write that failed because the disk, a quota or a file-size limit
    is full, else None. Writes are atomic, so nothing half-written was left in place:
    freeing space and re-running `dvc repro` resumes."""
    import errno

    full = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if isinstance(exc, OSError) and exc.errno in full:
        where = f" writing {exc.filename}" if exc.filename else ""
        reason = exc.strerror
    # safetensors and torch report a failed write in their own exception, with the OS's words
    elif any(os.strerror(e) in str(exc) for e in full):
        where, reason = "", next(os.strerror(e) for e in full if os.strerror(e) in str(exc))
    else:
        return None
    return (f"out of space{where} ({reason}); nothing was left half-written — free space "
            "and re-run `dvc repro`")


def run_shared_stage(module, argv: list[str] | None = None, takes_name: bool = False) -> None:
    """Entry of a stage every generation shares: `python stages/<kind>.py [NAME]`."""
    from studbook.core.errors import StudbookError

    args = entry(module, argv, takes_name=takes_name)
    if args is None:
        return
    try:
        summary(module.run(*args))
    except StudbookError as exc:
        sys.exit(f"error: {exc}")
    except Exception as exc:  # noqa: BLE001 - re-raised unless the disk is full
        if not out_of_space(exc):
            raise
        sys.exit(f"error: {out_of_space(exc)}")
