"""Metrics: the registry's entries, the generic entry of any mean-aggregated lm-eval metric,
what a task reports (derived as lm-eval derives it), and contracts checked against their
task folders before any compute, naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from studbook.core.config import validate
from studbook.core.errors import StudbookError
from studbook.evidence import metrics
from studbook.evidence.cards import fmt
from studbook.evidence.tasks import check_contract, task_files, task_metrics
from studbook.repository.recipes import Contract

# kind, name, direction, unit, precision, lm-eval's per-sample value, its per-item score, chance
# on an item row (None: the metric has no chance score, a founder cannot be gated on it)
ROWS = [
    ("byte-weighted (loglikelihood, bytes)", "bits_per_byte", "lower", "bits/byte", 4,
     (-693.1471805599453, 500), 2.0, 8.0),
    ("mean, chance 1/k", "acc", "higher", "fraction correct", 4, 1.0, 1.0, 0.25),
    ("mean, chance 1/k", "acc_norm", "higher", "fraction correct", 4, 0.0, 0.0, 0.25),
    ("mean, chance 0", "exact_match", "higher", "fraction exact", 4, 1, 1.0, 0.0),
    ("mean, filtered result key", "exact_match,strict-match", "higher", "fraction exact", 4,
     True, 1.0, 0.0),
    ("generic mean from the task", "acc_mutual_info", "higher", metrics.GENERIC_UNIT, 4, 0, 0.0, None),
    ("generic mean, custom name", "team_score", "lower", metrics.GENERIC_UNIT, 4, 0.625, 0.625, None),
]


def test_every_registered_metric_has_a_row():
    assert {r[1] for r in ROWS if metrics.registered(r[1]) and "," not in r[1]} == set(metrics.known())


@pytest.mark.parametrize("kind,name,direction,unit,precision,sample,score,chance", ROWS,
                         ids=[r[1] for r in ROWS])
def test_metric_entry(kind, name, direction, unit, precision, sample, score, chance):
    metric = metrics.lookup(name, direction)
    assert (metric.direction, metric.unit, metric.precision) == (direction, unit, precision)
    assert metric.item_score(sample) == pytest.approx(score)
    assert fmt(1 / 3, name) == f"{1 / 3:.{precision}f}"
    row = {"id": "x", name: score, "choices": 4, "bytes": 500}
    assert (metric.chance(row) if metric.chance else None) == chance


def test_a_generic_metric_refuses_a_value_that_is_not_a_number():
    with pytest.raises(TypeError):
        metrics.lookup("f1_custom", "higher").item_score(("gold", "prediction"))


def test_chance_scores_give_the_founders_reference_parent():
    from studbook.evidence.gate import Scores, uniform_scores

    child = Scores("child", None, {"bpb": {"a": {"bits_per_byte": 3.0, "bytes": 10}},
                                   "mc": {"b": {"acc": 1.0, "acc_norm": 1.0, "choices": 4}},
                                   "qa": {"c": {"exact_match": 1.0, "team_score": 0.5}}})
    uniform = uniform_scores(child).items
    assert uniform == {"bpb": {"a": {"bits_per_byte": 8.0}}, "mc": {"b": {"acc": 0.25, "acc_norm": 0.25}},
                       "qa": {"c": {"exact_match": 0.0}}}


# --- what a task reports ------------------------------------------------------------------

def write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


LOCAL = "dataset_path: json\ntest_split: test\n"


@pytest.mark.parametrize("body,expected", [
    ("output_type: loglikelihood_rolling\n",
     {"word_perplexity": ("lower", "weighted_perplexity"), "byte_perplexity": ("lower", "weighted_perplexity"),
      "bits_per_byte": ("lower", "bits_per_byte")}),
    ("output_type: multiple_choice\n", {"acc": ("higher", "mean"), "acc_norm": ("higher", "mean")}),
    ("output_type: generate_until\n", {"exact_match": ("higher", "mean")}),
    ("", {"exact_match": ("higher", "mean")}),  # lm-eval's default output_type
    ("output_type: loglikelihood\n", {"perplexity": ("lower", "perplexity"), "acc": ("higher", "mean")}),
    ("output_type: multiple_choice\nmetric_list:\n  - {metric: acc, higher_is_better: false}\n"
     "  - {metric: f1}\n", {"acc": ("lower", "mean"), "f1": ("higher", "f1")}),
    ("process_results: !function utils.score\nmetric_list:\n"
     "  - {metric: team_score, aggregation: mean, higher_is_better: false}\n",
     {"team_score": ("lower", "mean")}),
    ("metric_list:\n  - {metric: exact_match, aggregation: mean, higher_is_better: true}\nfilter_list:\n"
     "  - {name: strict-match, filter: [{function: take_first}]}\n  - {name: flexible, filter: []}\n",
     {"exact_match,strict-match": ("higher", "mean"), "exact_match,flexible": ("higher", "mean")}),
], ids=["rolling", "multiple-choice", "generate", "default-type", "loglikelihood", "metric-list",
        "process-results", "filters"])
def test_a_tasks_metrics_are_derived_as_lm_eval_derives_them(tmp_path, monkeypatch, body, expected):
    monkeypatch.chdir(tmp_path)
    write("tasks/utils.py", "def score(doc, results):\n    return {}\n")  # a hook must exist
    write("tasks/t.yaml", f"task: t\n{LOCAL}{body}")
    found = task_metrics("tasks/t.yaml")
    assert {k: (m.direction, m.aggregation) for k, m in found.items()} == expected


def test_task_files_follow_includes_hooks_and_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write("bench/team/_base_yaml", LOCAL + "output_type: generate_until\n")
    write("bench/_shared_yaml", "metadata: {version: 1.0}\n")
    write("bench/team/utils.py", "def score(doc, results):\n    return {}\n")
    write("bench/team/qa.yaml", "include: [_base_yaml, ../_shared_yaml]\ntask: qa\n"
          "process_results: !function utils.score\n"
          "dataset_kwargs: {data_files: {test: data/team/qa.jsonl}}\n")
    assert task_files(["bench"], "qa") == [
        "bench/team/qa.yaml", "bench/team/_base_yaml", "bench/_shared_yaml", "bench/team/utils.py",
        "data/team/qa.jsonl"]


# --- contracts checked against their tasks, before any compute ------------------------------

CONTRACT = """
description: a team's question answering
task_folders: [tasks, bench/team]
benchmarks:
  - {task: team_qa, metric: exact_match, niche: qa}
  - {task: team_docs, metric: bits_per_byte, niche: docs}
  - {task: team_rating, metric: team_score, niche: qa}
primary: {metric: exact_match, tasks: [team_qa]}
guarded:
  - {task: team_rating, metric: team_score, tolerance: 0.1}
compatibility: {architectures: [qwen2], max_parameters: 1000000}
"""
FILE = "conf/contract/team.yaml"


@pytest.fixture
def team_tasks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = "dataset_kwargs: {data_files: {test: data/team.jsonl}}\n"
    write("tasks/general.yaml", f"task: general\n{LOCAL}{data}output_type: multiple_choice\n")
    write("bench/team/qa.yaml", f"task: team_qa\n{LOCAL}{data}output_type: generate_until\n"
          "generation_kwargs: {until: [\"\\n\"], max_gen_toks: 8, do_sample: false}\n")
    write("bench/team/docs.yaml", f"task: team_docs\n{LOCAL}{data}output_type: loglikelihood_rolling\n")
    write("bench/team/rating.yaml", f"task: team_rating\n{LOCAL}{data}process_results: !function utils.rate\n"
          "metric_list:\n  - {metric: team_score, aggregation: mean, higher_is_better: false}\n"
          "  - {metric: team_f1, aggregation: f1, higher_is_better: true}\n")
    write("bench/team/utils.py", "def rate(doc, results):\n    return {}\n")
    write("data/team.jsonl", '{"q": "1+1", "a": "2"}\n')
    return tmp_path


def checked(data: dict, founder: bool = False) -> Contract:
    return check_contract(validate(Contract, data, file=FILE), FILE, founder=founder)


def test_a_contract_names_any_task_and_metric_under_its_folders(team_tasks):
    contract = checked(yaml.safe_load(CONTRACT))
    assert [b.direction for b in contract.benchmarks] == ["higher", "lower", "lower"]
    assert contract.primary.direction == "higher" and contract.guarded[0].direction == "lower"
    assert validate(Contract, {k: v for k, v in yaml.safe_load(CONTRACT).items() if k != "task_folders"},
                    file=FILE).task_folders == ["tasks"]


def edited(path: tuple, value) -> dict:
    data = yaml.safe_load(CONTRACT)
    target = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize("path,value,key,words", [
    (("benchmarks", 1, "task"), "team_trivia", "benchmarks[1].task",
     "no lm-eval task 'team_trivia' under tasks, bench/team"),
    (("benchmarks", 1, "metric"), "acc", "benchmarks[1].metric",
     "task 'team_docs' (bench/team/docs.yaml) does not report 'acc'; it reports bits_per_byte, "
     "byte_perplexity, word_perplexity"),
    (("guarded", 0, "direction"), "higher", "guarded[0].direction",
     "'team_score' of task 'team_rating': lower is better (higher_is_better in bench/team/rating.yaml), "
     "not higher"),
    (("benchmarks", 2, "metric"), "team_f1", "benchmarks[2].metric", "aggregated by 'f1'"),
    (("primary", "direction"), "lower", "primary", "exact_match: higher is better, not lower"),
    (("benchmarks", 0, "metric"), "exact match", "benchmarks[0].metric", "is not a metric"),
    (("task_folders",), ["tasks", "bench/gone"], "task_folders[1]", "no task folder 'bench/gone'"),
    (("task_folders",), ["../elsewhere"], "task_folders", "outside the repository"),
], ids=["unknown-task", "metric-not-reported", "direction-contradicts-task", "not-a-mean",
        "direction-contradicts-registry", "not-a-metric-key", "missing-folder", "folder-outside"])
def test_contract_errors_name_the_file_and_key(team_tasks, path, value, key, words):
    with pytest.raises(StudbookError) as info:
        checked(edited(path, value))
    assert info.value.file == FILE
    assert info.value.key == key and words in str(info.value)


def test_a_founder_is_gated_only_on_metrics_with_a_chance_score(team_tasks):
    data = edited(("primary",), {"metric": "team_score", "tasks": ["team_rating"]})
    assert checked(data).primary.direction == "lower"  # a child is compared with its parents
    with pytest.raises(StudbookError) as info:
        checked(data, founder=True)
    assert info.value.key == "primary.metric" and "no chance score" in str(info.value)


@pytest.mark.parametrize("task,text,key,words", [
    ("team_qa", "task: team_qa\ndataset_path: openai/gsm8k\n", "dataset_path", "not local data"),
    ("team_qa", f"task: team_qa\n{LOCAL}dataset_kwargs: {{data_files: data/team.jsonl}}\nmetric_list:\n"
     "  - {metric: rouge9}\n",
     "metric_list[0].metric", "lm-eval has no metric 'rouge9'"),
    ("team_qa", "task: team_qa\ninclude: _missing_yaml\n", "include", "not found"),
    # a data file nobody wrote: named here, not as a FileNotFoundError at evaluation
    ("team_qa", f"task: team_qa\n{LOCAL}dataset_kwargs: {{data_files: {{test: data/gone.jsonl}}}}\n",
     "dataset_kwargs.data_files", "data file data/gone.jsonl does not exist and no stage"),
    ("team_qa", f"task: team_qa\n{LOCAL}dataset_kwargs: {{data_files: {{test: /etc/passwd}}}}\n",
     "dataset_kwargs.data_files", "outside the repository"),
], ids=["hub-data", "unknown-lm-eval-metric", "missing-include", "missing-data", "absolute-data"])
def test_task_errors_name_the_task_file(team_tasks, task, text, key, words):
    write("bench/team/qa.yaml", text)
    with pytest.raises(StudbookError) as info:
        checked(yaml.safe_load(CONTRACT))
    assert info.value.file == "bench/team/qa.yaml"
    assert info.value.key == key and words in str(info.value)


def test_a_task_defined_twice_is_refused(team_tasks):
    write("tasks/copy.yaml", "task: team_qa\n" + LOCAL)
    with pytest.raises(StudbookError, match="task 'team_qa' is defined twice"):
        checked(yaml.safe_load(CONTRACT))


# --- the edge: `studbook check` and the evaluate stage's DVC dependencies --------------------

PICO = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}


def test_studbook_check_refuses_a_metric_the_task_does_not_report(skeleton):
    from typer.testing import CliRunner

    from studbook.cli import app
    from studbook.repository.proposal import propose

    propose("g1", "scratch", [], 1, PICO)
    contract = Path("conf/contract/stdlib_pico.yaml")
    contract.write_text(contract.read_text().replace(
        "{task: stdlib_bpb_tests, metric: bits_per_byte", "{task: stdlib_bpb_tests, metric: acc"))
    result = CliRunner().invoke(app, ["check", "g1"])
    assert result.exit_code == 2
    assert ("conf/contract/stdlib_pico.yaml: benchmarks[1].metric: task 'stdlib_bpb_tests' "
            "(tasks/stdlib_bpb_tests.yaml) does not report 'acc'") in result.output


def test_a_teams_task_folder_is_tracked_by_the_evaluate_stage(skeleton):
    from studbook.repository.proposal import propose

    write("bench/team/qa.yaml", f"task: team_qa\n{LOCAL}output_type: generate_until\n"
          "include: _base_yaml\ndataset_kwargs: {data_files: {test: bench/team/qa.jsonl}}\n")
    write("bench/team/_base_yaml", "metadata: {version: 1.0}\n")
    write("bench/team/qa.jsonl", '{"q": "1+1", "a": "2"}\n')
    contract = Path("conf/contract/stdlib_pico.yaml")
    contract.write_text(contract.read_text().replace(
        "benchmarks:\n", "task_folders: [tasks, bench/team]\nbenchmarks:\n"
        "  - {task: team_qa, metric: exact_match, niche: qa}\n"))
    propose("g1", "scratch", [], 1, PICO)
    stages = yaml.safe_load(Path("generations/g1/dvc.yaml").read_text())["stages"]
    deps = stages["evaluate"]["deps"]
    for file in ("bench/team/qa.yaml", "bench/team/_base_yaml", "bench/team/qa.jsonl",
                 "tasks/stdlib_bpb_general.yaml", "data/benchmarks/heldout/bpb_general.jsonl"):
        assert file in deps
    assert "bench/team/qa.yaml" not in stages["breed"]["deps"] + stages["record"]["deps"]


def test_a_founders_card_shows_no_reference_figure_for_a_metric_without_chance():
    from studbook.evidence.gate import UNIFORM, Scores, decide

    contract = Contract.model_validate({
        "description": "t", "compatibility": {"architectures": ["llama"], "max_parameters": 10},
        "benchmarks": [{"task": "qa", "metric": "exact_match", "niche": "n"},
                       {"task": "rating", "metric": "team_score", "niche": "n", "direction": "lower"}],
        "primary": {"metric": "exact_match", "tasks": ["qa"]}, "gate": {"bootstrap_samples": 100}})
    child = Scores("child", None, {"qa": {f"q{i}": {"exact_match": 1.0} for i in range(4)},
                                   "rating": {"r0": {"team_score": 0.5}}})
    verdict = decide(child, [], contract)
    assert verdict["parent_benchmarks"] == {UNIFORM: {"qa": 0.0, "rating": None}}
    assert fmt(None, "team_score") == "—"
