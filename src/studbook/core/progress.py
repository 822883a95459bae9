"""One progress report per stage, with an ETA: a bar on a terminal, a few lines in a pipe.

DVC, CI and `| tee` pipe a stage's output: a bar redrawn with carriage returns becomes
one line of thousands of characters there, so off a terminal the same progress is a
handful of `progress: …` lines: the first update (an early ETA), then one per tenth of the
work (every update with STUDBOOK_VERBOSE=1), eleven at most. On a terminal it is one tqdm bar on stderr. Only the main process
of a launch reports. Reporting reads the clock and nothing else: it draws no random
number and touches no tensor, so it cannot change what is computed.
"""

from __future__ import annotations

import os
import sys
import time

from studbook.core.failpoints import reached


def verbose() -> bool:
    """STUDBOOK_VERBOSE=1: the libraries' own bars, logs and warnings on the terminal too.
    A runtime knob like the device: it never enters a recipe or dvc.lock."""
    return os.environ.get("STUDBOOK_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`: whole seconds, read at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """`label` k/N `unit`, elapsed time and ETA; `note` (a loss, a rate) rides along.

    `update(done, note)` at any frequency: a terminal bar redraws at most ten times a
    second, a pipe gets a line at the first update and when the work crosses a tenth.
    Every update is also a failpoint (`say:<label> <k>/<N>*`, see `core.failpoints`),
    printed or not, so a fault can be injected at an exact step.
    """

    def __init__(self, label: str, total: int, unit: str = "", stream=None):
        self.label, self.total, self.unit = label, max(0, int(total)), unit
        self.stream = stream or sys.stderr
        self.done, self.note = 0, ""
        self.start = time.monotonic()
        self.lines = 0  # lines printed (a pipe)
        self._shown = -1  # the last tenth printed (a pipe)
        self._main = os.environ.get("RANK", "0") == "0"
        self._bar = None
        isatty = getattr(self.stream, "isatty", None)
        if self._main and isatty is not None and isatty():
            from tqdm import tqdm

            # disable=False explicitly: a stage sets TQDM_DISABLE for the libraries' own bars
            self._bar = tqdm(total=self.total or None, desc=label, unit=f" {unit}" if unit else "it",
                             file=self.stream, dynamic_ncols=True, leave=True, disable=False)

    def update(self, done: int, note: str = "") -> None:
        self.done = min(int(done), self.total) if self.total else int(done)
        self.note = note or self.note
        reached("say", f"{self.label} {self.done}/{self.total} {self.note}".rstrip())
        if not self._main:
            return
        if self._bar is not None:
            self._bar.n = self.done
            if self.note:
                self._bar.set_postfix_str(self.note, refresh=False)
            if self.done == self.total:
                self._bar.refresh()
            else:
                self._bar.update(0)  # redraws when tqdm's interval has passed
            return
        tenth = 10 * self.done // self.total if self.total else 10
        if verbose() or tenth > self._shown:  # the first update, each tenth, the end: once each
            self._shown = tenth
            print(self.line(), file=self.stream, flush=True)
            self.lines += 1

    def advance(self, count: int = 1, note: str = "") -> None:
        self.update(self.done + count, note)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        text = f"progress: {self.label} {self.done}/{self.total}{' ' + self.unit if self.unit else ''}"
        if self.total:
            text += f" ({100 * self.done // self.total}%)"
        text += f", {duration(elapsed)}"
        if self.done and self.total and self.done < self.total:
            text += f", ETA {duration(elapsed / self.done * (self.total - self.done))}"
        return text + (f"; {self.note}" if self.note else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
