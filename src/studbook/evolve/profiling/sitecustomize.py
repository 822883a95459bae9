"""`studbook evolve --profile`: where a candidate's wall time goes, without touching a stage.

The driver puts this folder first on the workers' PYTHONPATH and sets
STUDBOOK_PROFILE_DIR, so every Python process a worker starts (DVC's executor and the
three stage processes) imports this module at start-up. It writes one JSON line per
process at exit: argv, when the process started (from /proc, so interpreter start-up
counts), when it ended, and the seconds spent in top-level imports (depth-0 calls of
`__import__`, measured by wrapping it). `evolve/profile.py` joins the lines per candidate.

Hand-written because no kept library times a process tree's imports from outside:
`python -X importtime` prints per module to stderr (into DVC's logs) and cProfile costs
far more than it measures here. Any other `sitecustomize` on the path is loaded after it.
"""

import atexit
import builtins
import importlib.util
import json
import os
import sys
import time

_DIR = os.environ.get("STUDBOOK_PROFILE_DIR")


def _process_start() -> float:
    """Epoch seconds at which this process was created: its start in clock ticks since boot
    (/proc/self/stat field 22) against the uptime now (/proc/uptime; both to 10 ms, where
    /proc/stat's boot time is rounded to the second)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


if _DIR:
    _started = _process_start()
    _imports = [0.0]
    _depth = [0]
    _original = builtins.__import__

    def _timed_import(*args, **kwargs):
        if _depth[0]:
            return _original(*args, **kwargs)
        _depth[0] += 1
        begin = time.perf_counter()
        try:
            return _original(*args, **kwargs)
        finally:
            _imports[0] += time.perf_counter() - begin
            _depth[0] -= 1

    builtins.__import__ = _timed_import

    def _write() -> None:
        line = {"pid": os.getpid(), "argv": sys.argv, "cwd": os.getcwd(), "started": _started,
                "ended": time.time(), "import_seconds": round(_imports[0], 4)}
        try:
            with open(os.path.join(_DIR, f"{os.getpid()}.json"), "w") as f:
                f.write(json.dumps(line) + "\n")
        except OSError:
            pass

    atexit.register(_write)

# chain-load the next sitecustomize on the path, if any (this folder only adds itself first)
_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:
    if os.path.abspath(_entry or ".") == _here:
        continue
    _file = os.path.join(_entry or ".", "sitecustomize.py")
    if os.path.isfile(_file):
        _loaded = importlib.util.spec_from_file_location("_studbook_next_sitecustomize", _file)
        _loaded.loader.exec_module(importlib.util.module_from_spec(_loaded))
        break
