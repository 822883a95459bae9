import copy
import difflib
import re

import pytest
import yaml
from jinja2.exceptions import SecurityError

from studbook.evidence.cards import fmt, render_card

CONTEXT = {
    "name": "founder", "kind": "model", "method": "scratch", "relation": None,
    "verdict": "promoted", "reasons": ["net gain 5.1000 on bits_per_byte"],
    "parents": [{"name": "uniform-byte", "sha256": None, "reference": True}],
    "reference_parent": "uniform-byte", "contract": "stdlib_code",
    "contract_description": "Python code", "architecture": "llama", "parameters": 3230720,
    "seed": 1234, "recipe_sha256": "ab" * 32, "weights_sha256": "cd" * 32,
    "tokenizer_sha256": "ef" * 32,
    "data": {"folder": "data/corpus", "source": "python-stdlib", "python_version": "3.11.7",
             "split": "train", "niches": None, "documents": 1406, "content_sha256": "12" * 32},
    "versions": {"torch": "2.13.0", "lm_eval": "0.4.13"},
    "compute": {"steps": 200, "tokens": 819200, "seconds": 201.3, "flops": 1.59e13,
                "capped_by_seconds": False},
    "benchmarks": [
        {"task": "stdlib_bpb_tests", "niche": "tests", "metric": "bits_per_byte",
         "direction": "lower", "unit": "bits/byte", "value": 2.912345, "n_items": 48,
         "task_version": 1.0, "task_sha256": "00",
         "parents": [{"parent": "uniform-byte", "value": 8.0, "delta": -5.087655}]},
        {"task": "stdlib_nextline_tests", "niche": "tests", "metric": "acc",
         "direction": "higher", "unit": "fraction correct", "value": 0.5625, "n_items": 64,
         "task_version": 1.0, "task_sha256": "00",
         "parents": [{"parent": "uniform-byte", "value": 0.25, "delta": 0.3125}]},
    ],
    "primary": {"metric": "bits_per_byte", "direction": "lower", "tasks": ["stdlib_bpb_tests"],
                "child": 2.912345, "parents": {"uniform-byte": 8.0},
                "net_gain": {"mean": 5.087655, "ci_low": 5.0, "ci_high": 5.2, "p_value": 0.0005,
                             "n_items": 48}},
    "guards": [{"task": "stdlib_nextline_tests", "metric": "acc", "child": 0.5625,
                "parent": 0.25, "change": 0.3125, "change_ci_low": 0.2, "change_ci_high": 0.4, "tolerance": 0.05, "ok": True}],
    "studbook_relation": "founder", "teacher": None, "base": None, "total_parameters": 3230720,
    "retention": None, "target": None, "compounding": None,
    "numerics": {"mode": "pinned", "reproducible": True, "cpu_capability": "avx2",
                 "mkl_cbwr": "COMPATIBLE,STRICT", "onednn_max_isa": "AVX2", "threads": 2,
                 "device": "cpu", "torch": "2.13.0", "blas": "mkl 2024.2"},
    "hard_examples": {"file": "hard_examples/stdlib_code/founder.jsonl", "total": 32, "new": 32},
    "front_matter": {"library_name": "transformers",
                     "model-index": [{"name": "founder", "results": []}]},
}


def test_adapter_card_shows_base_and_retention():
    context = copy.deepcopy(CONTEXT)
    context.update(name="tests-lora", kind="adapter", method="lora", relation="adapter",
                   studbook_relation="adapter", parameters=81920, total_parameters=3312640,
                   base={"name": "founder", "sha256": "649505f6" + "0" * 56, "path": "models/founder"},
                   retention={"count": 32, "child": {"count": 32, "bits_per_byte": 3.51234},
                              "parents": {"founder": {"count": 32, "bits_per_byte": 3.61}}},
                   hard_examples={"file": "hard_examples/stdlib_code/tests-lora.jsonl",
                                  "total": 60, "new": 28})
    text = render_card(context)
    assert "| kind | adapter (llama, 81,920 parameters; 3,312,640 with its base) |" in text
    assert "| adapter base | founder `649505f60000` (pinned by sha256) |" in text
    assert "| bred by | `lora` (adapter) |" in text
    assert "Retention on the 32 hard examples inherited from the parents" in text
    assert "| tests-lora | 3.5123 | 32 |" in text and "| founder | 3.6100 | 32 |" in text
    assert "60 items, 28 new" in text


def test_same_results_render_byte_identical():
    first = render_card(copy.deepcopy(CONTEXT))
    second = render_card(copy.deepcopy(CONTEXT))
    assert first.encode() == second.encode()
    assert "| stdlib_bpb_tests | tests | bits_per_byte | 2.9123 | 8.0000 | -5.0877 | 48 |" in first
    assert "| training tokens | 819 ktokens |" in first
    assert first.startswith("---\nlibrary_name: transformers\nmodel-index:\n")


def test_one_metric_changes_one_line():
    changed = copy.deepcopy(CONTEXT)
    changed["benchmarks"][1]["value"] = 0.578125
    changed["benchmarks"][1]["parents"][0]["delta"] = 0.328125
    before, after = render_card(copy.deepcopy(CONTEXT)), render_card(changed)
    diff = [l for l in difflib.unified_diff(before.splitlines(), after.splitlines(), n=0)
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert diff == ["-| stdlib_nextline_tests | tests | acc | 0.5625 | 0.2500 | +0.3125 | 64 |",
                    "+| stdlib_nextline_tests | tests | acc | 0.5781 | 0.2500 | +0.3281 | 64 |"]


def test_the_card_records_the_numeric_environment_and_says_when_it_is_not_reproducible():
    pinned = render_card(copy.deepcopy(CONTEXT))
    assert ("- numerics: pinned — ATen kernels `avx2`, MKL_CBWR `COMPATIBLE,STRICT`, oneDNN `AVX2`, "
            "2 threads, cpu, torch 2.13.0, mkl 2024.2") in pinned
    assert ("the same weights on any cpu host with these library versions (x86 with AVX2, 2 threads, "
            "a CPU of the same vendor: Intel and AMD give other floats)") in pinned
    fast = copy.deepcopy(CONTEXT)
    fast["numerics"].update(mode="fast", reproducible=False, cpu_capability="avx512", mkl_cbwr="AUTO")
    text = render_card(fast)
    assert "- numerics: **fast** — not bit-reproducible across machines" in text
    assert "only on the same hardware and library versions" in text
    # the host and wall time share one line: a re-breed elsewhere changes only that line
    hosted = copy.deepcopy(CONTEXT)
    hosted["compute"]["host"] = "AMD EPYC 7B13"
    diff = [l for l in difflib.unified_diff(pinned.splitlines(), render_card(hosted).splitlines(), n=0)
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]
    assert diff == ["-| wall time | 201 s |", "+| wall time | 201 s on AMD EPYC 7B13 |"]


def test_strict_and_sandboxed():
    with pytest.raises(Exception, match="undefined"):
        render_card({"name": "x"}, template="{{ name }} {{ missing }}")
    with pytest.raises(SecurityError):
        render_card({}, template="{{ ''.__class__.__mro__[1].__subclasses__() }}")


def test_fixed_precision():
    assert fmt(2.0, "bits_per_byte") == "2.0000"
    assert fmt(-0.00004, "bits_per_byte", signed=True) == "-0.0000"
    assert fmt(None) == "—"


def test_compounding_section_states_the_ratio_and_its_bound():
    from studbook.evidence.cards import compounding

    context = copy.deepcopy(CONTEXT)
    target = {"task": "stdlib_mining_bpb_tests", "bits_per_byte": 3.05, "every": 10, "items": 48,
              "reached": True, "steps": 20, "tokens": 81920, "curve": []}
    child = {"steps": 20, "tokens": 81920, "flops": 1.6e12, "seconds": 21.4, "capped_by_seconds": False,
             "target": target}
    scratch = {"steps": 400, "tokens": 1638400, "flops": 3.2e13, "seconds": 433.0,
               "target": {**target, "reached": False, "steps": None, "tokens": None}}
    row = compounding(child, "tests-scratch", scratch)
    assert row["token_ratio"] == 0.05 and row["bound"] == "at most"
    context.update(method="finetune", parents=[{"name": "founder", "sha256": "cd" * 32}],
                   compute=child, target=target, compounding=row)
    text = render_card(context)
    assert "reached at step 20, after 81.9 ktokens" in text
    assert "| `tests-scratch` | from scratch | 400 | 1.64 M | 433 s | not reached |" in text
    assert ("with at most 5.0 % of the tokens `tests-scratch` needed from scratch "
            "(`tests-scratch` did not reach it within its budget) (4.9 % of its wall time).") in text
    assert render_card(copy.deepcopy(context)) == text
    # a child that does not reach the target has no ratio
    missed = compounding({**child, "target": {**target, "reached": False, "steps": None, "tokens": None}},
                         "tests-scratch", scratch)
    assert missed["token_ratio"] is None and missed["bound"] is None


def test_the_card_names_the_corpus_trained_on_or_none():
    trained = render_card(copy.deepcopy(CONTEXT))
    assert ("- data: trained on `data/corpus` (python-stdlib, Python 3.11.7), split train, "
            "1406 documents, content sha256 `" + "12" * 32 + "`") in trained
    untrained = copy.deepcopy(CONTEXT)
    untrained.update(data=None, method="import")
    text = render_card(untrained)
    assert "- data: none — this generation's weights were not trained here" in text
    assert "trained on" not in text


@pytest.mark.parametrize("hostile", [
    '<img src=x onerror=alert(1)>', '[click](javascript:alert(1))', 'a | b\n| injected | row |',
    '`code` and \\ backslash', '"]\n  click n_x "javascript:alert(1)"'])
def test_every_interpolated_value_is_inert_markdown(hostile):
    """A contract's description (a pull request may write it) and any other value reach the
    card as text: no HTML tag, no link, no table break, one line."""
    context = copy.deepcopy(CONTEXT)
    context["contract_description"] = hostile
    text = render_card(context)
    line = next(l for l in text.splitlines() if l.startswith("| contract |"))
    assert "<img" not in text and not re.search(r"(?<!\\)\]\(", text)  # no tag, no live link
    assert line.replace("\\|", "").count("|") == 3  # still one row of two cells
    assert "\n| injected" not in text
    front = text.split("---")[1]
    assert yaml.safe_load(front)["model-index"][0]["name"] == "founder"  # front matter still YAML
    assert render_card(copy.deepcopy(context)) == text


def test_the_wall_time_of_other_weights_never_reaches_a_card(tmp_path):
    """Found re-breeding the population on an AMD host: DVC's run cache restored founder's
    breed from an earlier run here, so generations/founder/compute.json still held the
    Intel breeding's 454 s for other weights, and the card said so. A compute record is
    used only for the weights it timed."""
    import json

    from studbook.stages.record import _with_wall_time

    meta = {"weights_sha256": "aa", "compute": {"steps": 4, "tokens": 64}}
    wall = tmp_path / "compute.json"
    wall.write_text(json.dumps({"weights_sha256": "aa", "seconds": 12.5, "host": "AMD EPYC"}))
    assert _with_wall_time(meta, wall)["compute"] == {"steps": 4, "tokens": 64, "seconds": 12.5,
                                                       "host": "AMD EPYC"}
    wall.write_text(json.dumps({"weights_sha256": "bb", "seconds": 454.1, "host": "Intel(R) Xeon(R)"}))
    assert _with_wall_time(meta, wall)["compute"] == {"steps": 4, "tokens": 64}
    wall.write_text("{}")  # a search's placeholder
    assert _with_wall_time(meta, wall)["compute"] == {"steps": 4, "tokens": 64}


def test_a_card_without_a_wall_time_says_so_and_renders():
    """With no compute record for its weights (breed restored from DVC's run cache), the card
    renders and its wall-time line says why there is no figure."""
    context = copy.deepcopy(CONTEXT)
    context["compute"].pop("seconds", None)
    context["compute"].pop("host", None)
    lines = [line for line in render_card(context).splitlines() if line.startswith("| wall time |")]
    assert lines == ["| wall time | not recorded (the weights came from DVC's run cache) |"]
