"""Stage card: `python stages/card.py NAME` for generations/NAME (see its dvc.yaml)."""

from studbook.pipeline import card
from studbook.runtime import run_stage

if __name__ == "__main__":
    run_stage(card)
