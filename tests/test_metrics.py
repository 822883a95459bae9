"""The metric registry: one entry per metric, and contracts validated against it."""

from __future__ import annotations

import pytest
import yaml

from studbook.core.config import validate
from studbook.core.errors import StudbookError
from studbook.evidence import metrics
from studbook.evidence.cards import fmt
from studbook.repository.recipes import Contract

# name, direction, unit, precision, lm-eval's per-sample value, its per-item score
ROWS = [
    ("bits_per_byte", "lower", "bits/byte", 4, (-693.1471805599453, 500), 2.0),
    ("acc", "higher", "fraction correct", 4, 1.0, 1.0),
    ("acc_norm", "higher", "fraction correct", 4, 0.0, 0.0),
    ("exact_match", "higher", "fraction exact", 4, 1.0, 1.0),
]


def test_every_registered_metric_has_a_row():
    assert sorted(r[0] for r in ROWS) == metrics.known()


@pytest.mark.parametrize("name,direction,unit,precision,sample,score", ROWS, ids=[r[0] for r in ROWS])
def test_metric_entry(name, direction, unit, precision, sample, score):
    metric = metrics.get(name)
    assert (metric.direction, metric.unit, metric.precision) == (direction, unit, precision)
    assert metric.item_score(sample) == pytest.approx(score)
    assert fmt(1 / 3, name) == f"{1 / 3:.{precision}f}"


def test_chance_scores_give_the_founders_reference_parent():
    from studbook.evidence.gate import Scores, uniform_scores

    child = Scores("child", None, {"bpb": {"a": {"bits_per_byte": 3.0, "bytes": 10}},
                                   "mc": {"b": {"acc": 1.0, "acc_norm": 1.0, "choices": 4}},
                                   "qa": {"c": {"exact_match": 1.0}}})
    uniform = uniform_scores(child).items
    assert uniform == {"bpb": {"a": {"bits_per_byte": 8.0}}, "mc": {"b": {"acc": 0.25, "acc_norm": 0.25}},
                       "qa": {"c": {"exact_match": 0.0}}}


CONTRACT = """
description: a team's question answering
benchmarks:
  - {task: team_qa, metric: exact_match, niche: qa}
primary: {metric: exact_match, tasks: [team_qa]}
compatibility: {architectures: [qwen2], max_parameters: 1000000}
"""


def test_a_contract_may_name_exact_match_and_its_direction_comes_from_the_registry():
    contract = validate(Contract, yaml.safe_load(CONTRACT), file="conf/contract/team.yaml")
    assert contract.primary.direction == "higher"


@pytest.mark.parametrize("edit,key,words", [
    (("benchmarks", 0, "metric", "rouge9"), "benchmarks[0].metric", "unknown metric 'rouge9'"),
    (("primary", "direction", "lower"), "primary", "exact_match: higher is better, not lower"),
], ids=["unknown-metric", "wrong-direction"])
def test_metric_errors_name_the_file_and_key(edit, key, words):
    data = yaml.safe_load(CONTRACT)
    target = data
    for part in edit[:-2]:
        target = target[part]
    target[edit[-2]] = edit[-1]
    with pytest.raises(StudbookError) as info:
        validate(Contract, data, file="conf/contract/team.yaml")
    assert info.value.file == "conf/contract/team.yaml"
    assert info.value.key == key and words in str(info.value)
