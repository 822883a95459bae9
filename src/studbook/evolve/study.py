"""The Optuna study of a search: where it lives, and how it resumes asking the same questions.

The study is a journal file (`JournalStorage` on a `JournalFileBackend`): append-only JSON
Lines, a readable diff in git, and safe across processes. The driver asks and tells
(Optuna's ask-and-tell interface), because a candidate's objective is measured by a DVC
queue worker in another process, not by a function Optuna calls.

Two facts, verified for docs/design/evolve.md, shape this module:
- A sampler's random state is not in the storage. After a kill -9, a search that builds one
  seeded sampler per process would ask something else. So the sampler is re-created
  before every ask, with a seed derived from (search seed, trial number); a resumed
  search then asks exactly what an uninterrupted one would.
- A kill -9 during an append can leave a torn last line, and every later read then fails.
  `repair_journal` truncates the file to its last complete line before the study is
  opened.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from studbook.evolve.space import Proposal, SearchSpace, suggest


def repair_journal(path: str | Path) -> int:
    """Truncate a journal to its last complete line; returns the bytes dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep == len(data):
        return 0
    with open(path, "r+b") as handle:
        handle.truncate(keep)
    return len(data) - keep


def sampler_for(space: SearchSpace, number: int):
    """The sampler that asks trial `number`: the space's kind, seeded by (seed, number)."""
    import optuna

    spec = space.sampler
    seed = int.from_bytes(hashlib.sha256(f"{spec.seed}:{number}".encode()).digest()[:4], "big")
    if spec.name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials)
    if spec.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=spec.startup_trials)
    if spec.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, 2 * space.budget.workers))
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(path: str | Path, space: SearchSpace, name: str):
    """Create the study at `path` (and enqueue the space's first trials), or load it after a
    repair: the same call starts and resumes a search."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_journal(path)
    storage = JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    existed = name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                direction="maximize", sampler=sampler_for(space, 0))
    if not existed:
        for entry in space.enqueue:
            study.enqueue_trial(entry, skip_if_exists=True)
    return study


def ask(study, space: SearchSpace, conf_dir: str | Path = "conf") -> tuple[object, Proposal]:
    """The next trial and its candidate, from a sampler seeded for this trial's number."""
    study.sampler = sampler_for(space, len(study.trials))
    trial = study.ask()
    return trial, suggest(trial, space, conf_dir)


def tell(study, number: int, net_gain: float | None) -> None:
    """A candidate's result: its net gain (positive is better), or None when it crashed,
    overran its cap or was invalid. Telling a finished trial again is harmless."""
    import optuna

    if net_gain is None:
        study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    else:
        study.tell(number, net_gain, skip_if_finished=True)
