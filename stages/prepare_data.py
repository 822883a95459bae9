"""Stage prepare_data: `python stages/prepare_data.py NAME` (body: `studbook.stages.prepare_data`)."""

import sys
from pathlib import Path

# The repository's own library comes first, whichever environment is active: the code
# DVC tracks for this stage is the code that runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from studbook.core.runtime import run_shared_stage  # noqa: E402
from studbook.stages import prepare_data  # noqa: E402

if __name__ == "__main__":
    run_shared_stage(prepare_data, takes_name=True)
