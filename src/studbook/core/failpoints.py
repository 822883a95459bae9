"""Fault injection for the reliability suite: die with SIGKILL at a named point.

`STUDBOOK_FAILPOINT` (a runtime knob, never in a recipe or dvc.lock) names where:

- `say:<glob>`    when a progress message matching the glob is printed
                  (`say:train step 20/*` is mid-training, `say:merge 10/*` mid-merge);
- `commit:<glob>` just before an atomic write renames its finished temporary into
                  place, when the target path matches (`commit:*verdict.json` is the
                  moment between deciding a promotion and recording it).

The whole process group gets SIGKILL, as when a machine loses power: `dvc repro` dies
with its stage and cannot clean up. Nothing is killed when the variable is unset.
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "STUDBOOK_FAILPOINT"


def reached(kind: str, subject: str) -> None:
    """Kill the process group if STUDBOOK_FAILPOINT is `<kind>:<glob>` and the glob matches."""
    wanted = os.environ.get(ENV)
    if not wanted or not wanted.startswith(kind + ":"):
        return
    if fnmatch.fnmatchcase(subject, wanted[len(kind) + 1:]):
        os.killpg(os.getpgrp(), signal.SIGKILL)
