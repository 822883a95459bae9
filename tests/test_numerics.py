"""The numeric pin: set in every stage process before torch starts, recorded, and golden.

The golden figures below are the sha256 of a pico Llama's weights after a few training
steps in a pinned process, one per CPU vendor: measured on an Intel Xeon (AVX-512, AMX)
and on an AMD EPYC (AVX-512). They differ: with the same pin (ATen at AVX2, MKL's
COMPATIBLE branch, which `mkl_serv_cbwr_get` confirms MKL honours on AMD too, oneDNN at
AVX2, 2 threads) the two vendors give other floats, so the pin reproduces weights across
hosts of one vendor, not across vendors. A host of a known vendor that breaks its figure
is a reproducibility regression, not noise; a vendor with no figure yet fails saying
what it measured, so the figure can be added once it is known.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TRAIN = r"""
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
from studbook.core.numerics import pin_process
pin_process()
import torch
from studbook.core import numerics
from studbook.operators.training import train
from studbook.operators.artifacts import build_model
from studbook.repository.recipes import ModelSpec, TrainSpec
import numpy as np
numerics.configure_torch(0)
spec = ModelSpec(architecture="llama", context_length=64, config={
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2})
model = build_model(spec, seed=0)
rng = np.random.default_rng(0)
from studbook.operators.packing import Stream
stream = Stream(ids=rng.integers(3, 259, size=20000).astype(np.int32), documents=1, text_bytes=20000)
train(model, stream, TrainSpec(steps=6, batch_size=4, lr=3e-3, warmup_steps=1, log_every=3), 64, 0)
digest = hashlib.sha256()
for name, value in sorted(model.state_dict().items()):
    digest.update(name.encode()); digest.update(value.contiguous().numpy().tobytes())
print(json.dumps({"sha256": digest.hexdigest(), "numerics": numerics.environment()}))
"""


def pinned_run(**env: str) -> dict:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS",
                                "MKL_NUM_THREADS", "STUDBOOK_NUMERICS", "STUDBOOK_THREADS")}
    environment.update(env)
    done = subprocess.run([sys.executable, "-c", TRAIN, str(ROOT / "src")], capture_output=True,
                          text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


GOLDEN = {
    "GenuineIntel": "7c22b6cf4495e5b636cfd610318840b16e7185a252d5631a58ea7b5b92c03fc4",
    "AuthenticAMD": "27dafec75fde49cbbe3f7424b0976dc8d3659a529379204bc37498248fd34c6b",
}


def vendor() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def test_a_pinned_process_uses_avx2_kernels_mkl_compatible_and_two_threads():
    result = pinned_run()
    env = result["numerics"]
    assert env["mode"] == "pinned" and env["reproducible"] is True
    assert env["cpu_capability"] == "avx2" and env["mkl_cbwr"] == "COMPATIBLE,STRICT"
    assert env["onednn_max_isa"] == "AVX2" and env["threads"] == 2 and env["device"] == "cpu"


def test_pinned_training_gives_the_golden_weights_of_its_cpu_vendor():
    measured = pinned_run()["sha256"]
    assert vendor() in GOLDEN, f"no golden figure for {vendor()} yet: this host measured {measured}"
    assert measured == GOLDEN[vendor()]


def test_fast_mode_is_recorded_as_not_reproducible():
    env = pinned_run(STUDBOOK_NUMERICS="fast")["numerics"]
    assert env["mode"] == "fast" and env["reproducible"] is False


def test_the_pin_refuses_to_run_after_torch_started_unpinned():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import torch\n"
            "from studbook.core.numerics import pin_process\n"
            "try:\n    pin_process()\nexcept Exception as exc:\n    print(type(exc).__name__, exc.key, exc)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "src")], capture_output=True, text=True,
                         env=env).stdout
    assert out.startswith("StudbookError STUDBOOK_NUMERICS") and "torch was imported before" in out


def test_an_unknown_numerics_mode_names_the_knob():
    from studbook.core.errors import StudbookError
    from studbook.core.numerics import mode

    os.environ["STUDBOOK_NUMERICS"] = "turbo"
    try:
        with pytest.raises(StudbookError) as info:
            mode()
        assert info.value.key == "STUDBOOK_NUMERICS" and "'turbo'" in str(info.value)
    finally:
        del os.environ["STUDBOOK_NUMERICS"]
