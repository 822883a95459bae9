# Sourced by the scripts: the project's venv first on PATH, and nothing reaches out.
export PATH="${STUDBOOK_VENV:-$PWD/.venv}/bin:$PATH"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DVC_NO_ANALYTICS=1
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
