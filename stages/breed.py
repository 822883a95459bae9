"""Stage breed: `python stages/breed.py NAME` (body: `studbook.stages.breed`)."""

import sys
from pathlib import Path

# The repository's own library comes first, whichever environment is active: the code
# DVC tracks for this stage is the code that runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from studbook.stages.entry import run_generation_stage  # noqa: E402
from studbook.stages import breed  # noqa: E402

if __name__ == "__main__":
    run_generation_stage(breed)
