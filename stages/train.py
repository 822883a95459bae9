"""Stage train: `python stages/train.py NAME` for generations/NAME (see its dvc.yaml)."""

from studbook.pipeline import train
from studbook.runtime import run_stage

if __name__ == "__main__":
    run_stage(train)
