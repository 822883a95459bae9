"""The metric registry: everything studbook knows about a metric, in one entry.

How lm-eval's per-sample value becomes one per-item score, how items aggregate into a
task figure (as lm-eval aggregates it, so a parent's figure on the child's items compares
like with like), which direction is better, the unit and the fixed precision the card
prints, and the chance score of a model that knows nothing (a founder's reference
parent). Contracts may name any registered metric; adding one of lm-eval's metrics is
one entry here plus its row in `tests/test_metrics.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from studbook.core.errors import StudbookError

_LN2 = math.log(2)


def _bits_per_byte(value) -> float:
    """lm-eval's rolling-loglikelihood sample: (loglikelihood in nats, bytes)."""
    loglikelihood, n_bytes = value
    return -loglikelihood / (n_bytes * _LN2)


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "lower" or "higher" is better
    unit: str
    precision: int  # decimals on cards and in diffs
    item_score: Callable[[object], float]  # lm-eval's per-sample value -> one float
    weighted_by_bytes: bool = False  # task figure = byte-weighted mean (else plain mean)
    chance: Callable[[dict], float] | None = None  # score of a know-nothing model on an item row


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.name in _REGISTRY:
        raise ValueError(f"metric '{metric.name}' is registered twice")
    _REGISTRY[metric.name] = metric
    return metric


def get(name: str, file: str | None = None, key: str = "metric") -> Metric:
    if name not in _REGISTRY:
        raise StudbookError(f"unknown metric '{name}' (known: {', '.join(known())})", file=file, key=key)
    return _REGISTRY[name]


def known() -> list[str]:
    return sorted(_REGISTRY)


UNIFORM_BITS_PER_BYTE = 8.0  # log2(256): every byte equally likely

register(Metric("bits_per_byte", "lower", "bits/byte", 4, _bits_per_byte, weighted_by_bytes=True,
                chance=lambda row: UNIFORM_BITS_PER_BYTE))
register(Metric("acc", "higher", "fraction correct", 4, float,
                chance=lambda row: 1.0 / row["choices"] if row.get("choices") else 0.0))
register(Metric("acc_norm", "higher", "fraction correct", 4, float,
                chance=lambda row: 1.0 / row["choices"] if row.get("choices") else 0.0))
register(Metric("exact_match", "higher", "fraction exact", 4, float, chance=lambda row: 0.0))
