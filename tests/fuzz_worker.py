"""Runs fuzz cases against what `studbook check` runs before compute, each bounded in time
and memory, in a worker process that a test supervises (tests/test_fuzz.py).

A case is one repository file (recipe, group file, contract or task YAML) replaced by a
mutated version. The worker writes it into its own scratch repository, runs the entry
point for its kind, restores the file, and reports one JSON line per case:

    accepted   the entry point returned
    refused    it raised StudbookError with a message
    error      anything else (the traceback's last line and where it was raised)
    timeout    it ran past the time bound (a CaseTimeout raised from a timer signal)
    memory     MemoryError under the address-space limit, or peak RSS grew past the bound

The supervisor (`run_cases`, in the test process) restarts a worker that dies or that the
timer could not interrupt (a loop in C), records that case, and goes on with the rest.

Run as `python fuzz_worker.py CASES.json TIME_BOUND_S MEMORY_BOUND_MB` in the scratch repository.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

# generations whose `studbook check` runs a mutated group file or contract, cheapest first
CHECK_ORDER = ("pico", "founder", "tests-scratch", "tests-lora", "concurrency-lora", "student",
               "tests-tuned", "specialist")
RSS_GROWTH_MB = 512  # a case that grows the worker's peak memory by more is a bomb, even if refused
WARMUP_S = 600  # imports (torch, transformers, lm-eval) on a slow machine
GRACE_S = 10  # beyond the time bound, before the supervisor kills a worker the timer missed
MAX_RESTARTS = 25


class CaseTimeout(BaseException):
    """Raised by the timer; a BaseException, so `except Exception` in the code under test
    cannot turn a hang into a refusal."""


TIMER_AT: dict = {}  # where the last timer signal interrupted the case

# ---------------------------------------------------------------- the worker process

def _studbook_check(name: str) -> None:
    """`studbook check NAME` (cli.check), with its error exit replaced by the error itself."""
    from studbook import cli

    cli.check([name])


def _reraise(exc: Exception) -> None:
    raise exc


def _contract(file: str):
    """A contract file validated and checked as `studbook check` does before compute."""
    from studbook.core.config import load_yaml, validate
    from studbook.evidence.tasks import check_contract
    from studbook.repository.recipes import Contract

    contract = validate(Contract, load_yaml(file), file=file)
    return check_contract(contract, file, founder=True)


def _tasks(contracts: dict, target: str | None = None) -> None:
    """The task folder indexed; the task file `target` (default: every task) merged with its
    includes and its metrics derived; then each shipped contract checked against the folder
    (which merges and derives every task it names, so a template through its tasks)."""
    from studbook.evidence.tasks import check_contract, task_config, task_index, task_metrics

    index = task_index(["tasks"])
    files = index.values() if target is None else [target] if target.endswith(".yaml") else []
    for file in files:
        task_config(file)
        task_metrics(file)
    for file, contract in contracts.items():
        check_contract(contract, file, founder=True)


class Worker:
    def __init__(self, bound_s: float, memory_mb: int):
        self.bound_s = bound_s
        self.memory_mb = memory_mb
        self.contracts: dict = {}  # pristine contract file -> validated Contract
        self.checker: dict[str, str] = {}  # recipe-part file -> generation whose check runs it

    def warm_up(self) -> dict:
        """Every entry point once on the pristine files (imports happen here, unbounded);
        returns what each did, so the test can insist the shipped files are accepted."""
        from studbook import cli
        from studbook.core.config import load_yaml, validate
        from studbook.repository.recipes import Contract

        cli._fail = _reraise
        outcomes = {}
        names = sorted(p.parent.name for p in Path("generations").glob("*/recipe.yaml"))
        for name in sorted(names, key=lambda n: CHECK_ORDER.index(n) if n in CHECK_ORDER else 99):
            outcomes[f"studbook check {name}"] = self._outcome(lambda n=name: _studbook_check(n))[0]
            recipe = load_yaml(f"generations/{name}/recipe.yaml")
            self.checker.setdefault(f"generations/{name}/recipe.yaml", name)
            for entry in recipe.get("defaults", []):
                if isinstance(entry, dict):
                    (group, option), = entry.items()
                    self.checker.setdefault(f"conf/{group}/{option}.yaml", name)
        for file in sorted(map(str, Path("conf/contract").glob("*.yaml"))):
            outcomes[f"contract {file}"] = self._outcome(lambda f=file: _contract(f))[0]
            self.contracts[file] = validate(Contract, load_yaml(file), file=file)
        outcomes["tasks"] = self._outcome(lambda: _tasks(self.contracts))[0]
        return outcomes

    def entry(self, kind: str, target: str):
        """The function a case of `kind` on file `target` runs."""
        if kind == "recipe":
            return lambda: _studbook_check(self.checker[target])
        if kind == "contract":
            def contract() -> None:  # both paths run: a refusal by one does not hide the other
                from studbook.core.errors import StudbookError

                refusal = None
                try:
                    _contract(target)
                except StudbookError as exc:
                    refusal = exc
                if target in self.checker:  # and as a recipe composes it
                    _studbook_check(self.checker[target])
                if refusal is not None:
                    raise refusal
            return contract
        if kind == "task":
            return lambda: _tasks(self.contracts, target)
        raise ValueError(kind)

    def _outcome(self, call, bound_s: float | None = None) -> tuple[dict, float]:
        from studbook.core.errors import StudbookError

        try:
            from hydra.core.global_hydra import GlobalHydra

            GlobalHydra.instance().clear()  # a case interrupted inside Hydra leaves it set
        except ImportError:
            pass
        TIMER_AT.clear()
        start = time.perf_counter()
        try:
            try:
                if bound_s:
                    signal.setitimer(signal.ITIMER_REAL, bound_s)
                call()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            outcome = {"outcome": "accepted"}
        except StudbookError as exc:
            message = str(exc).strip()
            outcome = {"outcome": "refused" if message and str(exc.detail).strip() else "error",
                       "detail": message[:300] or "StudbookError with an empty message"}
        except CaseTimeout:
            outcome = {"outcome": "timeout", **TIMER_AT, "detail": f"still running after {bound_s:g} s"}
        except MemoryError:
            outcome = {"outcome": "memory", **_where(sys.exc_info()[2]),
                       "detail": f"MemoryError under a {self.memory_mb} MiB address-space limit"}
        except BaseException as exc:  # every other outcome is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            outcome = {"outcome": "error", "detail": last[:300], **_where(exc.__traceback__)}
        return outcome, (time.perf_counter() - start) * 1000

    def run(self, case: dict) -> dict:
        path = Path(case["target"])
        original = path.read_bytes()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            path.write_bytes(base64.b64decode(case["content"]))
            outcome, ms = self._outcome(self.entry(case["kind"], case["target"]), self.bound_s)
        finally:
            path.write_bytes(original)
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        if outcome["outcome"] in ("accepted", "refused") and grown > RSS_GROWTH_MB:
            outcome = {"outcome": "memory", "detail": f"{outcome['outcome']}, but peak memory grew "
                       f"by {grown:.0f} MiB"}
        if outcome["outcome"] in ("accepted", "refused") and ms > self.bound_s * 1000:
            # the timer fired, but the code under test swallowed it (or a C call outlasted it)
            outcome = {"outcome": "timeout", **TIMER_AT, "detail": f"{outcome['outcome']} only after "
                       f"{ms:.0f} ms, past the {self.bound_s:g} s bound: {outcome.get('detail', '')}"[:300]}
        return {"id": case["id"], "ms": round(ms, 1), **outcome}


def _where(tb) -> dict:
    """Where an exception was raised: the innermost frame, and the innermost in studbook."""
    return _frames_at(traceback.extract_tb(tb) if tb is not None else [])


def _frames_at(frames) -> dict:
    out = {}
    if frames:
        out["raised_at"] = f"{frames[-1].filename}:{frames[-1].lineno}"
    mine = [f for f in frames if f"{os.sep}studbook{os.sep}" in f.filename]
    if mine:
        name = mine[-1].filename
        out["studbook_at"] = f"{name[name.rindex(f'{os.sep}studbook{os.sep}') + 1:]}:{mine[-1].lineno}"
    return out


def _on_timer(signum, frame) -> None:
    TIMER_AT.clear()
    TIMER_AT.update(_frames_at(traceback.extract_stack(frame)))
    raise CaseTimeout()


def _limit_memory(memory_mb: int) -> None:
    """Address space capped at `memory_mb` (or, if the imports already mapped more than half
    of that, at what they mapped plus half of it)."""
    with open("/proc/self/status") as status:
        mapped = next((int(line.split()[1]) // 1024 for line in status if line.startswith("VmSize")), 0)
    limit = max(memory_mb, mapped + memory_mb // 2) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(cases_file: str, bound_s: str, memory_mb: str) -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the code under test prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    cases = json.loads(Path(cases_file).read_text())
    worker = Worker(float(bound_s), int(memory_mb))
    signal.signal(signal.SIGALRM, _on_timer)
    protocol.write(json.dumps({"ready": worker.warm_up()}) + "\n")
    _limit_memory(int(memory_mb))
    for case in cases:
        protocol.write(json.dumps(worker.run(case)) + "\n")


# ---------------------------------------------------------------- the supervisor

class _Running:
    """One worker process over a list of cases, its pipe read line by line."""

    def __init__(self, repo: Path, cases: list[dict], bound_s: float, memory_mb: int, log: Path):
        self.repo, self.cases, self.done = repo, cases, 0
        cases_file = repo.parent / f"{repo.name}-cases.json"
        cases_file.write_text(json.dumps(cases))
        self.log = log.open("ab")
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(cases_file), str(bound_s),
             str(memory_mb)], cwd=repo, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.log)
        self.buffer = b""
        self.ready: dict | None = None
        self.deadline = time.monotonic() + WARMUP_S
        self.bound_s = bound_s

    def lines(self) -> list[dict] | None:
        """The complete lines read now; None at end of file (the worker exited)."""
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        out = [json.loads(line) for line in complete if line.strip()]
        if out:
            self.deadline = time.monotonic() + self.bound_s + GRACE_S
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def run_cases(repos: list[Path], cases: list[dict], originals: dict[str, bytes],
              bound_s: float, memory_mb: int, log: Path) -> tuple[list[dict], list[dict]]:
    """Run `cases` across one worker per scratch repository in `repos` (same files in each).

    Returns (one result per case, in order; each worker's warm-up outcomes). A worker that
    dies or outlives the time bound plus a grace period is killed (its pid only), the case it
    was on is recorded as a crash or a timeout, its file restored from `originals`, and a new
    worker takes the rest.
    """
    results: dict[str, dict] = {}
    warmups: list[dict] = []
    shares = [cases[i::len(repos)] for i in range(len(repos))]
    running = [_Running(repo, share, bound_s, memory_mb, log) for repo, share in zip(repos, shares) if share]
    restarts = 0
    while running:
        ready, _, _ = select.select([r.proc.stdout for r in running], [], [],
                                    max(0.0, min(r.deadline for r in running) - time.monotonic()))
        for worker in list(running):
            lines = worker.lines() if worker.proc.stdout in ready else []
            failure = None
            if lines is None:  # end of file: the worker died
                code = worker.proc.wait()
                failure = {"outcome": "error", "detail": f"worker died (exit status {code}): "
                           + _tail(log)}
            elif not lines and time.monotonic() > worker.deadline:
                failure = {"outcome": "timeout", "detail": f"worker killed after {worker.bound_s + GRACE_S:g} s: "
                           "the time bound did not interrupt it"}
            for line in lines or []:
                if "ready" in line:
                    worker.ready = line["ready"]
                    warmups.append(line["ready"])
                else:
                    results[line["id"]] = line
                    worker.done += 1
            if worker.done == len(worker.cases) or failure is not None:
                worker.stop()
                running.remove(worker)
            if worker.done == len(worker.cases) or failure is None:
                continue
            rest = worker.cases[worker.done:]
            if worker.ready is None:  # it never got to the cases: the warm-up itself failed
                warmups.append({"warm-up": {"outcome": "error", "detail": failure["detail"]}})
                for case in rest:
                    results[case["id"]] = {"id": case["id"], "outcome": "error", "ms": 0,
                                           "detail": "not run: the worker's warm-up failed"}
                continue
            case = rest[0]
            results[case["id"]] = {"id": case["id"], "ms": (bound_s + GRACE_S) * 1000, **failure}
            (worker.repo / case["target"]).write_bytes(originals[case["target"]])
            restarts += 1
            if rest[1:] and restarts <= MAX_RESTARTS:
                running.append(_Running(worker.repo, rest[1:], bound_s, memory_mb, log))
            else:
                for case in rest[1:]:
                    results[case["id"]] = {"id": case["id"], "outcome": "error", "ms": 0,
                                           "detail": f"not run: more than {MAX_RESTARTS} worker restarts"}
    return [results[case["id"]] for case in cases], warmups


def _tail(log: Path, lines: int = 3) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    main(*sys.argv[1:])
