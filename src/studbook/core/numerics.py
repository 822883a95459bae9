"""Reproducible numerics: the same weights on any CPU of the same kind.

Float results depend on which kernels run: PyTorch's own vectorised kernels pick an
instruction set at start-up (AVX2, AVX-512 …), MKL picks a GEMM code path and blocking
per CPU, and the number of threads decides how reductions are split. A stage process
therefore pins all three *before torch is imported* (the variables are read once, at
library start-up):

- `ATEN_CPU_CAPABILITY=avx2` — PyTorch's kernels use AVX2 on every x86 host that has it
  (all three host kinds seen here; AVX-512 and AMX hosts give other roundings otherwise).
- `MKL_CBWR=COMPATIBLE,STRICT` — MKL's conditional numerical reproducibility. Measured:
  `AVX2,STRICT` reproduced across two AMD hosts but not on an Intel Xeon, because MKL
  honours branches other than AUTO and COMPATIBLE on Intel processors only (Intel's CNR
  guide, "Specifying code branches"); COMPATIBLE is the branch that is the same on Intel
  and AMD, at a measured speed cost (see the benchmark table).
- `ONEDNN_MAX_CPU_ISA=AVX2` — oneDNN, should an op reach it, stays on AVX2 too.
- a fixed intra-op thread count (2 unless `STUDBOOK_THREADS` says otherwise; the count
  is part of the numeric environment the card records).

On a GPU, deterministic algorithms are switched on instead (cuBLAS workspace pinned).
`STUDBOOK_NUMERICS=fast` turns the pin off for speed; a card bred that way says it is
not bit-reproducible across machines. These are runtime knobs: they never enter a recipe
or `dvc.lock`, and the artifact records only what makes its weights what they are.
"""

from __future__ import annotations

import os
import sys

PIN = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
DEFAULT_THREADS = 2  # the reference machine's core count: a re-breed must use the same
MODES = ("pinned", "fast")


def mode() -> str:
    value = os.environ.get("STUDBOOK_NUMERICS", "pinned")
    if value not in MODES:
        from .errors import StudbookError

        raise StudbookError(f"STUDBOOK_NUMERICS={value!r} (known: {', '.join(MODES)})",
                            key="STUDBOOK_NUMERICS")
    return value


def threads() -> int:
    """Intra-op threads: STUDBOOK_THREADS, else 2 shared by the processes of a launch."""
    if "STUDBOOK_THREADS" in os.environ:
        return int(os.environ["STUDBOOK_THREADS"])
    return max(1, DEFAULT_THREADS // int(os.environ.get("WORLD_SIZE", "1")))


def pin_process() -> None:
    """Set the pin in this process's environment; call before anything imports torch."""
    n = str(threads())
    os.environ.setdefault("OMP_NUM_THREADS", n)
    os.environ.setdefault("MKL_NUM_THREADS", n)
    if mode() == "fast":
        return
    if "torch" in sys.modules:  # too late to pin from here: check that it was pinned outside
        missing = [k for k, v in PIN.items() if os.environ.get(k) != v]
        if missing:
            from .errors import StudbookError

            raise StudbookError("torch was imported before the numeric pin was set "
                                f"({', '.join(missing)}); run the stage as its own process",
                                key="STUDBOOK_NUMERICS")
        return
    os.environ.update(PIN)


def configure_torch(seed: int | None = None) -> None:
    """Threads, determinism and the seed, inside a pinned process."""
    import torch

    torch.set_num_threads(threads())
    if _device().startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if seed is not None:
        torch.manual_seed(seed)


def _device() -> str:
    from .runtime import device

    return device()


def environment() -> dict:
    """What made the floats what they are: recorded in the artifact (machine-independent
    when pinned, so identical weights give an identical artifact on any host)."""
    import torch

    pinned = mode() == "pinned"
    capability = torch.backends.cpu.get_cpu_capability()
    blas = "mkl" if torch.backends.mkl.is_available() else "other"
    if blas == "mkl":
        shown = torch.__config__.show()
        blas += " " + (shown.split("Math Kernel Library Version ")[1].split("-")[0]
                       if "Math Kernel Library Version " in shown else "")
    return {
        "mode": mode(),
        "reproducible": pinned and capability.lower() == PIN["ATEN_CPU_CAPABILITY"]
        and os.environ.get("MKL_CBWR") == PIN["MKL_CBWR"],
        "cpu_capability": capability.lower(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", "AUTO"),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL"),
        "threads": torch.get_num_threads(),
        "device": _device().split(":")[0],
        "torch": torch.__version__,
        "blas": blas.strip(),
    }


def host() -> str:
    """The host's CPU model (for the card's wall-time line; never in the artifact)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
