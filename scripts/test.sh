#!/usr/bin/env bash
# Sets up, then runs the default test suite (CPU, offline; one whole generation end to
# end on a pico model in a temporary git + DVC repository). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
exec python -m pytest -q "$@"
