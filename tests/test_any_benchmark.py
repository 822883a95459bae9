"""Any lm-eval benchmark: a team's own task folder, a `generate_until` task scored by
`exact_match` beside rolling bits per byte and multiple choice, through real lm-eval on
real pico models, the gate and the card; figures checked against an independent
computation (the model's own `generate` on the same prompts).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from studbook.core.config import validate
from studbook.repository.recipes import Contract, EvaluationSpec, ModelSpec

PICO = {"architecture": "llama", "context_length": 128, "config": {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 2, "tie_word_embeddings": True,
    "initializer_range": 0.5}}  # wide weights: greedy answers that differ from prompt to prompt
MAX_GEN_TOKS = 6
FOLDER = "bench/team"

ANSWER_TASK = f"""task: team_answer
dataset_path: json
dataset_kwargs:
  data_files:
    test: {FOLDER}/answer.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: {MAX_GEN_TOKS}
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.0
"""
FILTERED_TASK = ANSWER_TASK.replace("task: team_answer", "task: team_answer_filtered") + """filter_list:
  - name: whole
    filter: [{function: take_first}]
  - name: first-word
    filter: [{function: regex, regex_pattern: "(\\\\S+)"}, {function: take_first}]
"""
TEXT_TASK = f"""include: _text_template_yaml
task: team_text
dataset_kwargs:
  data_files:
    test: {FOLDER}/text.jsonl
"""
TEXT_TEMPLATE = """dataset_path: json
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
"""
CHOICE_TASK = f"""task: team_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {FOLDER}/choice.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
"""
CONTRACT = f"""description: a team's own benchmarks
task_folders: [{FOLDER}]
benchmarks:
  - {{task: team_answer, metric: exact_match, niche: qa}}
  - {{task: team_text, metric: bits_per_byte, niche: docs}}
  - {{task: team_choice, metric: acc, niche: docs}}
  - {{task: team_answer_filtered, metric: "exact_match,whole", niche: qa}}
primary: {{metric: exact_match, tasks: [team_answer]}}
guarded:
  - {{task: team_choice, metric: acc, tolerance: 1.0}}
compatibility: {{architectures: [llama], max_parameters: 1000000}}
gate: {{bootstrap_samples: 500}}
"""


def greedy_answers(model, tokenizer, prompts: list[str]) -> list[str]:
    """What lm-eval's `generate_until` should return: greedy continuation, cut at "\\n"."""
    import torch

    answers = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_GEN_TOKS, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0])
    return answers


def jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """Two pico models and a team folder of three tasks; the answers of 6 of the 8
    questions are the child's own greedy answers, 2 are answers it does not give."""
    from studbook.operators.artifacts import build_model, save_model
    from studbook.operators.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("team")
    spec = ModelSpec.model_validate(PICO)
    models = {}
    for name, seed in (("child", 0), ("parent", 1)):
        models[name] = build_model(spec, seed=seed).eval()
        save_model(models[name], build_tokenizer(spec.context_length), root / "models" / name)
    tokenizer = build_tokenizer(spec.context_length)
    prompts = [f"Q{i:02d}: what is {i} + {i}? A:" for i in range(8)]  # one length: no padding
    own = greedy_answers(models["child"], tokenizer, prompts)
    answers = [own[i] if i < 6 else "42" for i in range(8)]
    assert "42" not in own[6:]
    folder = root / FOLDER
    folder.mkdir(parents=True)
    jsonl(folder / "answer.jsonl", [{"id": f"a{i}", "niche": "qa", "question": q, "answer": a}
                                    for i, (q, a) in enumerate(zip(prompts, answers))])
    jsonl(folder / "text.jsonl", [{"id": f"t{i}", "niche": "docs",
                                   "text": f"def f{i}(x):\n    return x * {i}\n"} for i in range(4)])
    jsonl(folder / "choice.jsonl", [{"id": f"c{i}", "niche": "docs", "context": f"x = {i}\ny = ",
                                     "choices": [f"x + {i}", "None", "[]"], "label": 0}
                                    for i in range(4)])
    for name, text in (("answer.yaml", ANSWER_TASK), ("filtered.yaml", FILTERED_TASK), ("text.yaml", TEXT_TASK),
                       ("_text_template_yaml", TEXT_TEMPLATE), ("choice.yaml", CHOICE_TASK)):
        (folder / name).write_text(text, encoding="utf-8")
    return {"root": root, "models": models, "tokenizer": tokenizer, "prompts": prompts,
            "answers": answers}


@pytest.fixture(scope="module")
def evaluated(team):
    from studbook.evidence.evaluation import evaluate_model

    cwd = Path.cwd()
    import os

    os.chdir(team["root"])  # task data files are repository-relative paths
    try:
        tasks = ["team_answer", "team_answer_filtered", "team_text", "team_choice"]
        return {name: evaluate_model(f"models/{name}", tasks, [FOLDER], EvaluationSpec(batch_size=4), 128)
                for name in ("child", "parent")}
    finally:
        os.chdir(cwd)


def test_exact_match_equals_the_models_own_greedy_answers(team, evaluated):
    for name, evaluation in evaluated.items():
        mine = greedy_answers(team["models"][name], team["tokenizer"], team["prompts"])
        expected = [float(m == a) for m, a in zip(mine, team["answers"])]
        rows = evaluation["samples"]["team_answer"]
        assert [r["id"] for r in rows] == [f"a{i}" for i in range(8)]
        assert [r["exact_match"] for r in rows] == expected
        assert evaluation["results"]["team_answer"]["metrics"]["exact_match"] == sum(expected) / 8
        assert all("choices" not in r for r in rows)  # a generation is not a k-way choice
    assert evaluated["child"]["results"]["team_answer"]["metrics"]["exact_match"] == 0.75


def test_a_filtered_metric_is_keyed_as_lm_eval_keys_its_results(evaluated):
    """Filters give one sample per filter and document: one row per document, one key each."""
    result = evaluated["child"]["results"]["team_answer_filtered"]
    rows = evaluated["child"]["samples"]["team_answer_filtered"]
    assert len(rows) == 8 and set(result["metrics"]) == {"exact_match,whole", "exact_match,first-word"}
    plain = [r["exact_match"] for r in evaluated["child"]["samples"]["team_answer"]]
    assert [r["exact_match,whole"] for r in rows] == plain
    assert result["metrics"]["exact_match,first-word"] == pytest.approx(
        sum(r["exact_match,first-word"] for r in rows) / 8)


def test_bits_per_byte_and_multiple_choice_beside_it(team, evaluated):
    import torch

    rows = evaluated["child"]["samples"]
    assert {r["choices"] for r in rows["team_choice"]} == {3}
    assert set(rows["team_choice"][0]) == {"id", "niche", "doc_hash", "acc", "acc_norm", "choices"}
    # one document's bits per byte, computed directly (it fits one window: no rolling needed)
    model, tokenizer = team["models"]["child"], team["tokenizer"]
    text = "def f0(x):\n    return x * 0\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prefix = torch.tensor([[tokenizer.eos_token_id] + ids[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model(prefix).logits[0].double(), -1)
    nats = -sum(logp[i, t].item() for i, t in enumerate(ids))
    first = rows["team_text"][0]
    assert first["bytes"] == len(text.encode())
    assert first["bits_per_byte"] == pytest.approx(nats / len(text.encode()) / math.log(2), abs=1e-4)


def test_the_gate_and_card_on_exact_match(team, evaluated):
    from studbook.evidence.cards import directions, fmt
    from studbook.evidence.gate import UNIFORM, decide, scores_from_samples
    from studbook.evidence.tasks import check_contract
    import os

    cwd = Path.cwd()
    os.chdir(team["root"])
    try:
        contract = validate(Contract, yaml.safe_load(CONTRACT), file="conf/contract/team.yaml")
        contract = check_contract(contract, "conf/contract/team.yaml", founder=True)
    finally:
        os.chdir(cwd)
    assert [b.direction for b in contract.benchmarks] == ["higher", "lower", "higher", "higher"]
    child = scores_from_samples("child", "aa" * 32, evaluated["child"]["samples"])
    parent = scores_from_samples("parent", "bb" * 32, evaluated["parent"]["samples"])
    parent_em = evaluated["parent"]["results"]["team_answer"]["metrics"]["exact_match"]
    verdict = decide(child, [parent], contract)
    gain = verdict["primary"]["net_gain"]
    assert verdict["primary"]["child"] == 0.75 and gain["mean"] == pytest.approx(0.75 - parent_em)
    assert gain["n_items"] == 8 and verdict["verdict"] == "promoted"
    assert verdict["parent_benchmarks"]["parent"]["team_text"] == pytest.approx(
        evaluated["parent"]["results"]["team_text"]["metrics"]["bits_per_byte"], rel=1e-9)
    founder = decide(child, [], contract)  # the know-nothing reference answers nothing exactly
    assert founder["primary"]["parents"] == {UNIFORM: 0.0} and founder["verdict"] == "promoted"
    benchmarks = [{"metric": b.metric, "direction": b.direction} for b in contract.benchmarks]
    assert directions(benchmarks) == ("Higher exact match is better; lower bits per byte is better; "
                                      "higher accuracy is better; higher exact match (filter `whole`) "
                                      "is better")
    assert verdict["parent_benchmarks"]["parent"]["team_answer_filtered"] == parent_em
    assert fmt(0.75, "exact_match") == "0.7500" and fmt(0.123456, "rouge_mean") == "0.1235"
