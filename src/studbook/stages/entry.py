"""The entry of a generation stage: resolve generations/NAME once, run the stage's body."""

from __future__ import annotations

import sys

from studbook.core.runtime import entry, summary


def run_generation_stage(module, argv: list[str] | None = None) -> None:
    """Entry of a generation stage: `python stages/<kind>.py NAME`.

    Resolves generations/NAME once (recipe, method, parents) and hands the typed
    `Generation` to `module.run`, then prints its `key: value` summary; user errors
    (StudbookError) exit with the message naming file and key, not a traceback.
    """
    from studbook.core.errors import StudbookError

    args = entry(module, argv, takes_name=True)
    if args is None:
        return
    if getattr(module, "LAUNCHABLE", False) and argv is None:
        from studbook.core.launch import relaunch

        relaunch(sys.argv[0], args)  # under STUDBOOK_LAUNCHER, e.g. `accelerate launch …`
    try:
        from studbook.repository.generation import resolve

        result = module.run(resolve(args[0]))
        if result is not None:  # None: a launched process other than the main one
            summary(result)
    except StudbookError as exc:
        sys.exit(f"error: {exc}")
    except Exception as exc:  # noqa: BLE001 - re-raised unless the disk is full
        from studbook.core.runtime import out_of_space

        if not out_of_space(exc):
            raise
        sys.exit(f"error: {out_of_space(exc)}")
