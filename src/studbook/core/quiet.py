"""The libraries' own chatter, kept out of the way: in full in a log file, not on the terminal.

lm-eval warns once per metric that a task names without an aggregation, transformers
that a document is longer than the context (lm-eval's rolling windows handle that), and
both log their progress at INFO. Inside `library_output`, each library's own logging
control sends all of it, in full, to one log file under `.dvc/tmp/logs/` (git-ignored by
DVC, never a DVC output, so it cannot touch dvc.lock), Python warnings included; the
stage prints where it is and how many warnings it holds. With STUDBOOK_VERBOSE=1 the
terminal gets everything as well. Everything is put back as it was on exit.
"""

from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from studbook.core.progress import verbose

# Library loggers handled with `logging`'s own controls; transformers through its logging
# module (its own handler and verbosity). Those with a handler of their own (datasets adds
# one on import) have it muted for the duration unless STUDBOOK_VERBOSE is set.
_LOGGERS = ("lm_eval", "datasets", "accelerate", "peft", "py.warnings")


def log_file(name: str, stage: str) -> Path:
    """Where a stage's library log goes: `.dvc/tmp/logs/NAME/STAGE.log` in a DVC
    repository (the working directory of every stage), else the system's temp folder;
    each launched process other than the main one has its own (`STAGE.rankN.log`)."""
    import os

    base = Path(".dvc") if Path(".dvc").is_dir() else Path(tempfile.gettempdir()) / "studbook"
    rank = os.environ.get("RANK", "0")
    return base / "tmp" / "logs" / name / (f"{stage}.log" if rank == "0" else f"{stage}.rank{rank}.log")


class Tally(logging.Handler):
    """Counts the warnings (and worse) written to the log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.warnings = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings += 1


@contextmanager
def library_output(path: Path) -> Iterator[Tally]:
    """lm-eval's, transformers', datasets', Accelerate's and PEFT's logs at INFO and
    Python's warnings go to `path` (rewritten) for the duration; the yielded tally counts
    the warnings among them."""
    import warnings

    import transformers.utils.logging as hf

    path.parent.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(path, mode="w", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    tally = Tally()
    loud = verbose()
    saved = []  # (logger, level, propagate, its own handlers' levels, handlers added)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        own = [(handler, handler.level) for handler in logger.handlers]
        added = [file, tally] + ([logging.StreamHandler()] if loud and not own else [])  # stderr
        saved.append((logger, logger.level, logger.propagate, own, added))
        logger.setLevel(logging.INFO)
        logger.propagate = False  # not also to the last-resort handler on stderr
        for handler, _ in own if not loud else ():
            handler.setLevel(logging.CRITICAL + 1)
        for handler in added:
            logger.addHandler(handler)
    verbosity = hf.get_verbosity()
    hf.set_verbosity_info()
    if not loud:
        hf.disable_default_handler()
    for handler in (file, tally):
        hf.add_handler(handler)
    with warnings.catch_warnings():
        logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger
        try:
            yield tally
        finally:
            logging.captureWarnings(False)
            for handler in (file, tally):
                hf.remove_handler(handler)
            hf.enable_default_handler()
            hf.set_verbosity(verbosity)
            for logger, level, propagate, own, added in saved:
                for handler in added:
                    logger.removeHandler(handler)
                for handler, handler_level in own:
                    handler.setLevel(handler_level)
                logger.setLevel(level)
                logger.propagate = propagate
            file.close()
