"""Peak memory of a three-parent merge: under 1.5 x one parent plus the output.

Three ~190 MB parents (large enough that a copy of any of them shows in the resident
set) are merged with TIES in a fresh process; its peak resident set (VmHWM) above
what it held just before the merge is compared with the sizes of a parent and of the
output file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

SHAPES = {f"model.layers.{i}.mlp.{k}.weight": (2048, 1024) for i in range(8) for k in ("up", "down", "gate")}

MEASURE = r"""
import json, sys
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
import torch
from studbook.operators.merging import merge_from_yaml
merge_from_yaml(sys.argv[3], sys.argv[4])  # warm-up on tiny models: one-time imports happen here
before = rss("VmRSS")
merge_from_yaml(sys.argv[1], sys.argv[2])
print(json.dumps({"before": before, "peak": rss("VmHWM")}))
"""


def make_parent(folder: Path, seed: int, scale: int = 1) -> int:
    generator = torch.Generator().manual_seed(seed)
    tensors = {name: torch.randn((shape[0] // scale, shape[1] // scale), generator=generator)
               for name, shape in SHAPES.items()}
    folder.mkdir()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return (folder / "model.safetensors").stat().st_size


def test_three_parent_merge_streams(tmp_path):
    sizes = [make_parent(tmp_path / name, seed) for seed, name in enumerate(["base", "a", "b"])]
    for seed, name in enumerate(["tiny-base", "tiny-a", "tiny-b"]):
        make_parent(tmp_path / name, seed, scale=64)
    parent = sizes[0]
    assert parent > 180e6

    def ties(prefix: str) -> Path:
        config = tmp_path / f"{prefix}ties.yaml"
        config.write_text(
            f"merge_method: ties\nbase_model: {tmp_path / (prefix + 'base')}\nparameters: {{normalize: true}}\n"
            f"models:\n  - model: {tmp_path / (prefix + 'a')}\n    parameters: {{weight: 0.6, density: 0.5}}\n"
            f"  - model: {tmp_path / (prefix + 'b')}\n    parameters: {{weight: 0.4, density: 0.5}}\n")
        return config

    result = subprocess.run([sys.executable, "-c", MEASURE, str(ties("")), str(tmp_path / "out"),
                             str(ties("tiny-")), str(tmp_path / "tiny-out")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    memory = json.loads(result.stdout.strip().splitlines()[-1])
    output = (tmp_path / "out" / "model.safetensors").stat().st_size
    assert output == parent
    extra = memory["peak"] - memory["before"]
    budget = 1.5 * parent + output
    print(f"merge_peak_extra_mb: {extra / 1e6:.0f}  parent_mb: {parent / 1e6:.0f}  "
          f"budget_mb: {budget / 1e6:.0f}  ratio_to_parent: {extra / parent:.3f}")
    assert extra < budget
    # streaming holds a few tensors, not a parent: measured 0.5-1.2 x parent here (TIES'
    # working set on 8 MB tensors plus the allocator's slack, which varies run to run), so
    # only the requirement itself is asserted
