#!/usr/bin/env bash
# Creates .venv and installs studbook with its stack. Idempotent: re-runs only when
# pyproject.toml changed. The CPU build of torch goes in first, pinned, so nothing later can pull a
# multi-GB CUDA build. STUDBOOK_VENV=/abs/path reuses an existing environment that
# already has studbook (nothing is installed into it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The site test opens `studbook site` in a real headless Chromium: Debian's package, driven
# by Playwright (whose own browser download is not used). Installed once, only as root.
if [ "$(id -u)" = 0 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (apt) for the site test" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
        || echo "setup: could not install chromium; the site test says how" >&2
fi
if [ -n "${STUDBOOK_VENV:-}" ] && "$STUDBOOK_VENV/bin/python" -c "import studbook" 2>/dev/null; then
    echo "setup: using $STUDBOOK_VENV" >&2
    exit 0
fi
VENV=${STUDBOOK_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
stamp=$VENV/.studbook-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing torch 2.13.0 (CPU) and the studbook stack (~2 min)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # STUDBOOK_TORCH_INDEX=https://download.pytorch.org/whl/cpu (the workflows set it) takes
    # torch from PyTorch's CPU index, where PyPI would give a hosted runner the CUDA build;
    # unset, pip's own configuration decides (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, find-links).
    "$VENV/bin/python" -m pip install -q ${STUDBOOK_TORCH_INDEX:+--index-url "$STUDBOOK_TORCH_INDEX"} "torch==2.13.0"
    "$VENV/bin/python" -m pip install -q -e ".[dev]"
    touch "$stamp"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch, transformers, lm_eval, dvc.version as v; print("torch", torch.__version__, "transformers", transformers.__version__, "dvc", v.__version__)'))" >&2
