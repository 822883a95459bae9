"""What the numeric pin costs: studbook's training at the founder size, pinned vs fast.

Each sample is its own process, because the pin must be set before torch starts
(`studbook.core.numerics.pin_process`): `STUDBOOK_NUMERICS=pinned` (the default: ATen
kernels at AVX2, MKL's vendor-neutral COMPATIBLE path, oneDNN at AVX2, 2 threads) against
`STUDBOOK_NUMERICS=fast` (whatever the host offers, 2 threads as well, so only the
instruction-set pin differs). Both train the founder's architecture (conf/model/llama_3m.yaml)
with the founder's budget on the same random byte stream, alternating A B A B and keeping
each one's best (the machine is shared and noisy: the ratio is the figure).

    python bench/numerics_cost.py [--steps 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import report  # the bench folder is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from studbook.core.numerics import pin_process
pin_process()
import numpy as np, yaml
from pathlib import Path
from studbook.core import numerics
from studbook.operators.artifacts import build_model
from studbook.operators.training import train
from studbook.repository.recipes import ModelSpec, TrainSpec
root, steps = Path(sys.argv[2]), int(sys.argv[3])
numerics.configure_torch(0)
spec = ModelSpec.model_validate(yaml.safe_load((root / "conf/model/llama_3m.yaml").read_text()))
budget = yaml.safe_load((root / "conf/train/founder.yaml").read_text())
stream = np.random.default_rng(0).integers(3, 259, size=2_000_000).astype(np.uint16)
model = build_model(spec, seed=0)
train(model, stream, TrainSpec.model_validate({**budget, "steps": 2, "log_every": 2}), spec.context_length, 1)
result = train(model, stream, TrainSpec.model_validate({**budget, "steps": steps, "log_every": steps}),
               spec.context_length, 0)
print(json.dumps({"tokens_per_second": result.tokens_per_second, "numerics": numerics.environment()}))
"""


def sample(mode: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "STUDBOOK_THREADS")}
    env["STUDBOOK_NUMERICS"] = mode
    done = subprocess.run([sys.executable, "-c", SAMPLE, str(ROOT / "src"), str(ROOT), str(steps)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    best = {"pinned": 0.0, "fast": 0.0}
    environments = {}
    for _ in range(2):
        for mode in ("pinned", "fast"):
            result = sample(mode, args.steps)
            best[mode] = max(best[mode], result["tokens_per_second"])
            environments[mode] = result["numerics"]
    report({
        "pinned_tokens_per_second": best["pinned"],
        "fast_tokens_per_second": best["fast"],
        "pinned_vs_fast": best["pinned"] / best["fast"],
        "fast_cpu_capability": environments["fast"]["cpu_capability"],
        "pinned_cpu_capability": environments["pinned"]["cpu_capability"],
        "pinned_mkl_cbwr": environments["pinned"]["mkl_cbwr"],
        "threads": environments["pinned"]["threads"],
    }, args.json)


if __name__ == "__main__":
    main()
