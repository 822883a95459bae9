"""The metric registry: what studbook knows about a metric beyond what lm-eval reports.

A contract may name any metric its task reports (`evidence.tasks.task_metrics` derives
them, with their direction and aggregation, from the task's YAML and lm-eval's own
registry). A metric lm-eval aggregates by a plain mean needs nothing here: its per-item
score is the float of lm-eval's per-sample value and its task figure the mean
(`lookup` gives that generic entry). This registry holds the metrics that need more:
a per-sample value that is not a number (bits per byte's (loglikelihood, bytes)), an
aggregation that is not a plain mean (byte-weighted), a chance score (the score of a
model that knows nothing: a founder's reference parent), or a unit and label for cards.
Adding one is one entry here plus its row in `tests/test_metrics.py`.

A metric is named by lm-eval's result key: `name` (the unfiltered "none" filter) or
`name,filter` on a task with a `filter_list`; the registry is keyed by the name.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

from studbook.core.errors import StudbookError

_LN2 = math.log(2)


def _bits_per_byte(value) -> float:
    """lm-eval's rolling-loglikelihood sample: (loglikelihood in nats, bytes)."""
    loglikelihood, n_bytes = value
    return -loglikelihood / (n_bytes * _LN2)


def scalar(value) -> float:
    """lm-eval's per-sample value of a mean-aggregated metric (bool, int or float)."""
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"not a per-item number: {value!r}")


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str | None  # "lower" or "higher" is better (None: the task says)
    unit: str
    precision: int  # decimals on cards and in diffs
    item_score: Callable[[object], float]  # lm-eval's per-sample value -> one float
    weighted_by_bytes: bool = False  # task figure = byte-weighted mean (else plain mean)
    chance: Callable[[dict], float] | None = None  # score of a know-nothing model on an item row
    label: str = ""  # how the card's prose names it


GENERIC_UNIT = "mean per item"
GENERIC_PRECISION = 4

_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in _REGISTRY:
        raise ValueError(f"metric '{metric.name}' is registered twice")
    _REGISTRY[metric.name] = metric
    return metric


def base_name(key: str) -> str:
    """`exact_match,strict-match` -> `exact_match` (lm-eval's result key -> metric name)."""
    return key.split(",", 1)[0]


def registered(key: str) -> Metric | None:
    return _REGISTRY.get(base_name(key))


def get(name: str, file: str | None = None, key: str = "metric") -> Metric:
    entry = registered(name)
    if entry is None:
        raise StudbookError(f"unknown metric '{name}' (registered: {', '.join(known())})",
                            file=file, key=key)
    return entry


def lookup(key: str, direction: str | None = None) -> Metric:
    """The registry's entry, or the generic one of a mean-aggregated lm-eval metric."""
    entry = registered(key)
    if entry is not None:
        return entry
    return Metric(key, direction, GENERIC_UNIT, GENERIC_PRECISION, scalar, label=f"`{key}`")


def precision(key: str) -> int:
    entry = registered(key)
    return entry.precision if entry else GENERIC_PRECISION


def known() -> list[str]:
    return sorted(_REGISTRY)


UNIFORM_BITS_PER_BYTE = 8.0  # log2(256): every byte equally likely

register(Metric("bits_per_byte", "lower", "bits/byte", 4, _bits_per_byte, weighted_by_bytes=True,
                chance=lambda row: UNIFORM_BITS_PER_BYTE, label="bits per byte"))
register(Metric("acc", "higher", "fraction correct", 4, scalar,
                chance=lambda row: 1.0 / row["choices"] if row.get("choices") else 0.0,
                label="accuracy"))
register(Metric("acc_norm", "higher", "fraction correct", 4, scalar,
                chance=lambda row: 1.0 / row["choices"] if row.get("choices") else 0.0,
                label="length-normalised accuracy"))
register(Metric("exact_match", "higher", "fraction exact", 4, scalar, chance=lambda row: 0.0,
                label="exact match"))
