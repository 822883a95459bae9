"""The stage bodies: one module per stage kind, each with `run(...) -> summary dict`.

`stages/KIND.py` at the repository root is the thin entry DVC runs; it puts the
repository's own `src/` first on the path, pins the numerics, resolves the generation
once and calls `run`. A stage module never imports another stage module.
"""
