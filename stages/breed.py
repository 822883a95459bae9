"""Stage breed: `python stages/breed.py NAME` for generations/NAME (see its dvc.yaml)."""

import sys

from studbook.errors import StudbookError
from studbook.pipeline import breed
from studbook.runtime import offline, summary


def main() -> None:
    offline()
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    try:
        summary(breed(sys.argv[1]))
    except StudbookError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
