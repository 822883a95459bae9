"""Stage gate: `python stages/gate.py NAME` for generations/NAME (see its dvc.yaml)."""

from studbook.pipeline import gate
from studbook.runtime import run_stage

if __name__ == "__main__":
    run_stage(gate)
