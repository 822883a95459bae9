"""Stage evaluate: `python stages/evaluate.py NAME` for generations/NAME (see its dvc.yaml)."""

from studbook.pipeline import evaluate
from studbook.runtime import run_stage

if __name__ == "__main__":
    run_stage(evaluate)
