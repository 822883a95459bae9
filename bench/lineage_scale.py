"""`studbook lineage` on a synthetic history of 1 000 generations (100 of them merged in).

Prints the in-process time of reading the lineage (cards + git history) and rendering
all three formats, the wall time of the whole `studbook lineage` command, and ratios to
a baseline measured in the same process: parsing the 1 000 card JSON files alone.

    python bench/lineage_scale.py [--generations 1000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic import synthetic_history  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    out = Path(args.json).resolve() if args.json else None
    from studbook.repository.lineage import as_json, load, mermaid, text_tree

    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        start = time.perf_counter()
        synthetic_history(repo, args.generations)
        built = time.perf_counter() - start
        os.chdir(repo)
        start = time.perf_counter()
        for file in sorted(Path("cards").glob("*.json")):
            json.loads(file.read_text())
        baseline = time.perf_counter() - start
        start = time.perf_counter()
        members = load()
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        text_tree(members), mermaid(members), as_json(members)
        rendered = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "studbook.cli", "lineage"], check=True,
                       capture_output=True)
        command = time.perf_counter() - start
    print(f"generations: {args.generations} (history built in {built:.2f} s)")
    print(f"baseline_parse_cards_seconds: {baseline:.3f}")
    print(f"lineage_load_seconds: {loaded:.3f}  ({loaded / baseline:.1f} x baseline)")
    print(f"lineage_render_seconds: {rendered:.3f}  ({rendered / baseline:.1f} x baseline)")
    print(f"lineage_command_seconds: {command:.3f}  ({command / baseline:.1f} x baseline, "
          "interpreter start and imports included)")
    if out:
        out.write_text(json.dumps({"generations": args.generations, "baseline_seconds": baseline,
                                   "load_seconds": loaded, "render_seconds": rendered,
                                   "command_seconds": command}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
