#!/usr/bin/env bash
# Creates .venv and installs studbook with its stack. Idempotent: re-runs only when
# pyproject.toml changed. The CPU build of torch goes in first, pinned, so nothing
# later can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.studbook-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing torch 2.13.0 (CPU) and the studbook stack (~2 min)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q "torch==2.13.0"
    .venv/bin/python -m pip install -q -e ".[dev]"
    touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/python -c 'import torch, transformers, lm_eval, dvc.version as v; print("torch", torch.__version__, "transformers", transformers.__version__, "dvc", v.__version__)'))" >&2
