"""2-step training runs with golden losses, on pico models of two architectures."""

import numpy as np
import pytest
import yaml

from studbook.operators.artifacts import build_model, load_model, parameter_count, save_model, weights_sha256
from studbook.repository.recipes import ModelSpec, TrainSpec
from studbook.operators.packing import Stream
from studbook.operators.tokenizer import build_tokenizer
from studbook.operators.training import train

from conftest import ROOT

TEXT = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(300))
# golden: mean cross-entropy (nats/token) of 2 steps, seed 0, on this machine's torch build
GOLDEN = {"gpt2_pico": 5.0719, "llama_pico": 5.0928}


def byte_stream(text: str) -> Stream:
    """`text` through the byte tokenizer, as one document without a separator."""
    ids = build_tokenizer(128)(text, add_special_tokens=False)["input_ids"]
    return Stream(ids=np.asarray(ids, dtype=np.int32), documents=1, text_bytes=len(text.encode()))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_two_step_golden_loss_and_roundtrip(name, tmp_path):
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / f"conf/model/{name}.yaml").read_text()))
    budget = TrainSpec(steps=2, batch_size=2, lr=1e-2, log_every=1)
    model = build_model(spec, seed=0)
    assert parameter_count(model) < 50_000  # pico: hidden 32, 2 layers
    result = train(model, byte_stream(TEXT), budget, spec.context_length, seed=0)
    assert result.steps == 2 and result.tokens == 2 * 2 * spec.context_length
    assert result.final_loss == pytest.approx(GOLDEN[name], abs=2e-3)
    save_model(model, build_tokenizer(spec.context_length), tmp_path / "m")
    again = build_model(spec, seed=0)
    train(again, byte_stream(TEXT), budget, spec.context_length, seed=0)
    save_model(again, build_tokenizer(spec.context_length), tmp_path / "m2")
    # same inputs and seed give the same weights, bit for bit
    assert weights_sha256(tmp_path / "m") == weights_sha256(tmp_path / "m2")
    loaded = load_model(tmp_path / "m")
    assert loaded.config.model_type == spec.architecture


def _learning_run(budget: TrainSpec, steps: int = 30) -> tuple[float, float, dict]:
    spec = ModelSpec.model_validate(yaml.safe_load((ROOT / "conf/model/llama_pico.yaml").read_text()))
    model = build_model(spec, seed=0)
    stream = byte_stream(TEXT)
    first = train(model, stream, TrainSpec.model_validate({**budget.model_dump(), "steps": 1}),
                  spec.context_length, seed=0).final_loss
    model = build_model(spec, seed=0)
    result = train(model, stream, TrainSpec.model_validate({**budget.model_dump(), "steps": steps}),
                   spec.context_length, seed=0)
    return first, result.final_loss, {n: p.dtype for n, p in model.named_parameters()}


def test_bf16_mixed_learns_with_float32_weights():
    import torch

    fp32 = TrainSpec(steps=1, batch_size=4, lr=1e-2, log_every=5)
    bf16 = TrainSpec.model_validate({**fp32.model_dump(), "precision": "bf16-mixed"})
    start, end, dtypes = _learning_run(bf16)
    _, end_fp32, _ = _learning_run(fp32)
    assert set(dtypes.values()) == {torch.float32}  # master weights stay float32
    assert end < start - 1.0  # it learns
    assert end != end_fp32 and end == pytest.approx(end_fp32, abs=0.15)  # other rounding, same course


@pytest.mark.slow
def test_compiled_training_matches_eager_closely():
    eager = TrainSpec(steps=1, batch_size=4, lr=1e-2, log_every=5)
    compiled = TrainSpec.model_validate({**eager.model_dump(), "compile": True})
    _, end_eager, _ = _learning_run(eager, steps=10)
    _, end_compiled, _ = _learning_run(compiled, steps=10)
    assert end_compiled == pytest.approx(end_eager, abs=0.02)
