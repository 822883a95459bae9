"""Stage breed: `python stages/breed.py NAME` for generations/NAME (see its dvc.yaml)."""

from studbook.pipeline import breed
from studbook.runtime import run_stage

if __name__ == "__main__":
    run_stage(breed)
