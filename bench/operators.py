"""Per-operator timings on the founder's architecture (llama_3m, 3.2 M parameters).

Baseline, in the same process: one plain full-weight training step (batch 8 x 512).
Every other figure is printed in seconds and as a ratio to that baseline:
full-weight merges of three parents (streamed), a LoRA training step, a distillation
step (teacher forward included), and a PEFT adapter merge.

    python bench/operators.py [--steps 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per training variant")
    args = parser.parse_args()

    from peft import get_peft_model

    from studbook.operators.artifacts import build_model, save_model
    from studbook.operators.merging import merge_from_yaml
    from studbook.operators.methods.distill import DistillParameters
    from studbook.operators.methods.lora import LoraParameters, lora_config
    from studbook.repository.recipes import ModelSpec, TrainSpec
    from studbook.operators.tokenizer import build_tokenizer
    from studbook.operators.training import train

    root = Path(__file__).resolve().parents[1]
    spec = ModelSpec.model_validate(yaml.safe_load((root / "conf/model/llama_3m.yaml").read_text()))
    student_spec = ModelSpec.model_validate(yaml.safe_load((root / "conf/model/llama_1m.yaml").read_text()))
    stream = np.random.default_rng(0).integers(3, 259, 200_000).astype(np.uint16)
    budget = TrainSpec(steps=args.steps, batch_size=8, lr=1e-3, log_every=args.steps)
    torch.set_num_threads(torch.get_num_threads())

    def timed(fn) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    rows = []
    model = build_model(spec, seed=0)
    base_step = timed(lambda: train(model, stream, budget, spec.context_length, seed=0)) / args.steps
    rows.append(("full-weight training step", base_step))
    peft_model = get_peft_model(build_model(spec, seed=0), lora_config(LoraParameters(rank=16, alpha=32)))
    rows.append(("LoRA r=16 training step", timed(
        lambda: train(peft_model, stream, budget, spec.context_length, seed=0)) / args.steps))
    teacher, student = build_model(spec, seed=0), build_model(student_spec, seed=1)
    rows.append(("distillation step (1.1 M student, 3.2 M teacher)", timed(
        lambda: train(student, stream, budget, spec.context_length, seed=0, teacher=teacher,
                      distill=DistillParameters())) / args.steps))

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for index, name in enumerate(("base", "a", "b")):
            save_model(build_model(spec, seed=index), build_tokenizer(spec.context_length), scratch / name)
        configs = {
            "linear": "merge_method: linear\nmodels:\n  - {model: a, parameters: {weight: 0.5}}\n"
                      "  - {model: b, parameters: {weight: 0.5}}\n  - {model: base, parameters: {weight: 1.0}}\n",
            "task_arithmetic": "merge_method: task_arithmetic\nbase_model: base\nmodels:\n"
                               "  - {model: a, parameters: {weight: 0.5}}\n  - {model: b, parameters: {weight: 0.5}}\n",
            "ties": "merge_method: ties\nbase_model: base\nmodels:\n"
                    "  - {model: a, parameters: {weight: 0.5, density: 0.5}}\n"
                    "  - {model: b, parameters: {weight: 0.5, density: 0.5}}\n",
            "dare_ties": "merge_method: dare_ties\nbase_model: base\nmodels:\n"
                         "  - {model: a, parameters: {weight: 0.5, density: 0.5}}\n"
                         "  - {model: b, parameters: {weight: 0.5, density: 0.5}}\n",
            "slerp": "merge_method: slerp\nbase_model: base\nparameters: {t: 0.5}\nmodels:\n  - {model: a}\n",
        }
        for method, text in configs.items():
            config = scratch / f"{method}.yaml"
            config.write_text(text)
            rows.append((f"{method} merge, 3 parents" if method != "slerp" else "slerp merge, 2 parents",
                         timed(lambda: merge_from_yaml(config, scratch / f"out-{method}"))))

    width = max(len(name) for name, _ in rows)
    print(f"{'operator':<{width}}  seconds  x baseline")
    for name, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.3f}  {seconds / base_step:9.2f}")
    print(f"baseline_step_seconds: {base_step:.3f}")
    print(f"tokens_per_second_full: {8 * spec.context_length / base_step:.0f}")


if __name__ == "__main__":
    main()
