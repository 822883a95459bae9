#!/usr/bin/env bash
# Sets up, then breeds the embedded default's founder with `dvc repro` and shows the
# population. Usage: scripts/breed.sh [GENERATION]   (default: founder)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
. scripts/env.sh
setup_done=$(date +%s)
generation=${1:-founder}
dvc repro "generations/$generation/dvc.yaml"
end=$(date +%s)
studbook population
echo "setup_seconds: $((setup_done - start))"
echo "breed_seconds: $((end - setup_done))"
echo "card: cards/$generation.md"
