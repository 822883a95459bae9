"""A member folder's `README.md`: its card, where the Hub and `ModelCard.load` look for it.

Why a `.dvcignore` entry, and not a DVC output: `models/NAME/` (or `adapters/NAME/`) is the
breed stage's output and a dependency of evaluate, record and every child, while the card
is written later, by record. DVC refuses an output inside another stage's output
("overlaps"), and a README.md that were part of the folder's hash would make record modify
its own dependency and the breed stage's output: `dvc status` dirty forever, children
re-bred for a text change. With `/models/*/README.md` and `/adapters/*/README.md` in
`.dvcignore`, DVC neither hashes nor caches the file: the weights' hash is the same with or
without it, `dvc status` stays clean, `dvc checkout` leaves it in place and `dvc repro` stays
a no-op (checked with dvc 3.67 by tests/test_publish.py). The cost: DVC does not restore it
(`dvc pull` gives the folder without it), so `cards/NAME.md` in git stays the card and the
README is always derived from it — by record, and by `studbook publish` before an upload.
"""

from __future__ import annotations

from pathlib import Path

README = "README.md"


def dvc_ignores(path: str | Path) -> bool:
    """Whether the repository's `.dvcignore` covers `path` (relative to the repository root,
    the working directory of stages and commands), read with the pattern class DVC uses."""
    from pathspec import PathSpec

    try:  # dvc/ignore.py's choice, for the same matches
        from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern as Pattern
    except ImportError:  # pathspec<1
        from pathspec.patterns import GitWildMatchPattern as Pattern

    ignore = Path(".dvcignore")
    if not ignore.is_file():
        return False
    spec = PathSpec.from_lines(Pattern, ignore.read_text(encoding="utf-8").splitlines())
    return spec.match_file(Path(path).as_posix())


def write_member_readme(folder: str | Path, card_text: str) -> str:
    """Write the card, byte for byte, as `FOLDER/README.md` (atomically); returns the path,
    or why it was not written: a repository whose `.dvcignore` lacks the entry (one scaffolded
    before it existed) gets no README.md rather than a stage that edits its own dependency."""
    from studbook.core.atomic import write_text_atomic

    readme = Path(folder) / README
    if not dvc_ignores(readme):
        return f"not written: .dvcignore does not cover {readme.as_posix()}"
    if not readme.is_file() or readme.read_text(encoding="utf-8") != card_text:
        write_text_atomic(readme, card_text)
    return readme.as_posix()
