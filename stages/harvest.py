"""Stage harvest: hard examples from the mining split -> hard_examples/CONTRACT/NAME.{jsonl,yaml}."""

from studbook.pipeline import harvest
from studbook.runtime import run_stage

if __name__ == "__main__":
    run_stage(harvest)
