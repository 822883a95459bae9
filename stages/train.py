"""Stage train: `python stages/train.py NAME` for generations/NAME (see its dvc.yaml)."""

import sys

from studbook.errors import StudbookError
from studbook.pipeline import train
from studbook.runtime import offline, summary


def main() -> None:
    offline()
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    try:
        summary(train(sys.argv[1]))
    except StudbookError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
