"""One whole generation, end to end, on a pico Llama in a temporary git + DVC repository.

Real git, real `dvc repro`, real lm-eval, real torch training; nothing mocked.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

from conftest import copy_skeleton, git_dvc_init, run

PY = sys.executable


@pytest.fixture(scope="module")
def bred(tmp_path_factory) -> tuple[Path, str]:
    repo = copy_skeleton(tmp_path_factory.mktemp("e2e") / "studbook")
    git_dvc_init(repo)
    run([PY, "-m", "studbook.cli", "propose", "pico", "--model", "llama_pico", "--train", "pico",
         "--contract", "stdlib_pico"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "propose pico"], repo)
    result = run([PY, "-m", "dvc", "repro", "generations/pico/dvc.yaml"], repo, timeout=900)
    return repo, result.stdout + result.stderr


def test_stages_print_greppable_summaries(bred):
    _, log = bred
    for line in ("method: scratch", "verdict: promoted", "card: cards/pico.md",
                 "reference_parent: uniform-byte"):
        assert line in log
    assert "tokens: 2048" in log  # 4 steps x 4 sequences x 128 tokens


def test_repro_prints_progress_not_the_libraries_chatter(bred):
    """One progress report per stage with an ETA, a few lines in a pipe; lm-eval's and
    transformers' warnings in full in the evaluate stage's log file instead (issue 16)."""
    repo, log = bred
    lines = log.splitlines()
    dvc = re.compile(r"(Running stage |> python stages/|(Generating|Updating) lock file|To track |To enable |"
                     r"Use `dvc push`|\s+git add |\s+dvc config |\s*$)")
    summary = re.compile(r"[\w.-]+: \S")  # a stage's `key: value` block
    foreign = [line for line in lines if not (dvc.match(line) or summary.match(line))]
    assert not foreign, foreign  # nothing from lm-eval, transformers, datasets or tqdm
    assert "aggregation is not" not in log and "Token indices" not in log and "\r" not in log
    evaluate = [line for line in lines if line.startswith("progress: evaluate pico ")]
    assert 1 <= len(evaluate) <= 11 and re.match(r"progress: evaluate pico (\d+)/\1 items \(100%\)", evaluate[-1])
    stage = log.split("dvc.yaml:evaluate':", 1)[1].split("Running stage", 1)[0].splitlines()
    assert len(stage) <= 10  # `> python …`, the summary, the lock: its stdout (progress is on stderr)
    train = [line for line in lines if line.startswith("progress: train step ")]
    assert train[-1].startswith("progress: train step 4/4 (100%)") and "bits/byte" in train[-1]
    assert "ETA" in train[0] and len(train) <= 11
    detail = repo / ".dvc/tmp/logs/pico/evaluate.log"
    assert f"log: {detail.relative_to(repo).as_posix()} (" in log
    assert "aggregation is not" in detail.read_text()


def test_the_training_log_is_indexed_by_the_optimizer_step(bred):
    repo, _ = bred
    for metric in ("bits_per_byte", "loss", "lr"):
        rows = (repo / f"generations/pico/live/plots/metrics/train/{metric}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{metric}"
        assert [int(row.split("\t")[0]) for row in rows[1:]] == [2, 4]  # log_every 2 of 4 steps
    assert json.loads((repo / "generations/pico/live/metrics.json").read_text())["step"] == 4


def test_dvc_plots_show_every_curve_against_the_step_and_nothing_else(bred):
    """The root chart overlays every generation's curve (written by `studbook refresh`); a
    generation's own chart is named, so selecting it plots no dvc.yaml as if it were data."""
    repo, _ = bred
    before = (repo / "dvc.yaml").read_text()
    try:
        run([PY, "-m", "studbook.cli", "refresh"], repo)
        assert "generations/pico/live/plots/metrics/train/bits_per_byte.tsv: bits_per_byte" in \
            (repo / "dvc.yaml").read_text()
        shown = json.loads(run([PY, "-m", "dvc", "plots", "show", "--json"], repo).stdout)
        one = json.loads(run([PY, "-m", "dvc", "plots", "show", "--json",
                              "generations/pico/dvc.yaml::training"], repo).stdout)
    finally:
        (repo / "dvc.yaml").write_text(before)
    assert not shown.get("errors") and not one.get("errors")
    assert set(shown["data"]) == {"dvc.yaml::training", "generations/pico/dvc.yaml::training"}
    assert list(one["data"]) == ["training"]
    for chart in (shown["data"]["dvc.yaml::training"][0], one["data"]["training"][0]):
        content = chart["content"]
        assert content["encoding"]["x"] == {"field": "step", "type": "quantitative", "title": "optimizer step"}
        assert [int(row["step"]) for row in content["data"]["values"]] == [2, 4]


def test_card_has_real_numbers(bred):
    repo, _ = bred
    card = json.loads((repo / "cards/pico.json").read_text())
    text = (repo / "cards/pico.md").read_text()
    assert card["verdict"] == "promoted"
    values = {b["task"]: b["value"] for b in card["benchmarks"]}
    assert 4.0 < values["stdlib_bpb_general"] < 8.0  # learned something, still a pico model
    assert 0.0 <= values["stdlib_nextline_general"] <= 1.0
    assert card["primary"]["net_gain"]["ci_low"] > 0
    assert f"| stdlib_bpb_general | general | bits_per_byte | {values['stdlib_bpb_general']:.4f} |" in text
    meta = json.loads((repo / "models/pico/studbook.json").read_text())
    assert card["weights_sha256"] == meta["weights_sha256"]
    assert meta["recipe"]["model"]["config"]["hidden_size"] == 32
    assert meta["data"]["python_version"] == card["data"]["python_version"]


def test_card_rerenders_byte_identical(bred):
    repo, _ = bred
    from studbook.evidence.cards import render_card

    context = json.loads((repo / "cards/pico.json").read_text())
    assert render_card(context) == (repo / "cards/pico.md").read_text()
    assert render_card(context) == render_card(json.loads((repo / "cards/pico.json").read_text()))


def test_lm_eval_matches_a_direct_computation(bred):
    """bits per byte from lm-eval equals windowed log-likelihood computed by hand."""
    import torch
    from transformers import AutoModelForCausalLM

    repo, _ = bred
    model = AutoModelForCausalLM.from_pretrained(repo / "models/pico").eval()
    rows = [json.loads(line) for line in
            (repo / "generations/pico/eval/samples/stdlib_bpb_general.jsonl").read_text().splitlines()]
    items = {json.loads(line)["id"]: json.loads(line)["text"] for line in
             (repo / "data/benchmarks/heldout/bpb_general.jsonl").read_text().splitlines()}
    length = model.config.max_position_embeddings
    for row in rows[:3]:
        data = items[row["id"]].encode()
        ids = torch.tensor([1] + [b + 3 for b in data])
        nll = 0.0
        with torch.no_grad():
            for start in range(0, len(ids) - 1, length):
                window = ids[start:start + length + 1]
                logits = model(window[None, :-1]).logits[0]
                nll += torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum").item()
        direct = nll / (len(data) * math.log(2))
        assert row["bits_per_byte"] == pytest.approx(direct, rel=5e-3)


def test_second_repro_is_a_noop_and_git_sees_only_the_generation(bred):
    repo, _ = bred
    again = run([PY, "-m", "dvc", "repro", "generations/pico/dvc.yaml"], repo)
    assert "Data and pipelines are up to date" in again.stdout
    assert "Running stage" not in again.stdout
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout
    changed = sorted(line[3:] for line in status.splitlines())
    assert changed == ["cards/pico.json", "cards/pico.md", "dvc.lock", "generations/pico/compute.json",
                       "generations/pico/dvc.lock",
                       "generations/pico/metrics.json", "generations/pico/verdict.json",
                       "hard_examples/stdlib_pico/pico.jsonl", "hard_examples/stdlib_pico/pico.yaml"]


def test_a_config_edit_reruns_exactly_its_dependents(bred):
    repo, _ = bred
    conf = repo / "conf/train/pico.yaml"
    original = conf.read_text()
    try:
        conf.write_text(original.replace("steps: 4", "steps: 5"))
        status = run([PY, "-m", "dvc", "status", "generations/pico/dvc.yaml"], repo).stdout
        assert "generations/pico/dvc.yaml:breed" in status  # a param of breed: steps 4 -> 5
        assert "conf/train/pico.yaml" in status and "steps" in status
        assert "generations/pico/dvc.yaml:evaluate" not in status  # it does not read the train group
        assert "prepare_data" not in status and "build_benchmarks" not in status
    finally:
        conf.write_text(original)
    assert "up to date" in run([PY, "-m", "dvc", "status", "generations/pico/dvc.yaml"], repo).stdout


def test_artifact_loads_without_studbook(bred):
    repo, _ = bred
    code = (
        "import sys\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "m = AutoModelForCausalLM.from_pretrained('models/pico')\n"
        "t = AutoTokenizer.from_pretrained('models/pico')\n"
        "assert not any(k.startswith('studbook') for k in sys.modules)\n"
        "print(type(m).__name__, t('ab').input_ids)\n"
    )
    out = run([PY, "-I", "-c", code], repo).stdout
    assert out.strip() == "LlamaForCausalLM [100, 101]"


def test_lm_eval_cli_runs_on_the_artifact(bred):
    repo, _ = bred
    out = run([PY, "-m", "lm_eval", "--model", "hf", "--model_args",
               "pretrained=models/pico,dtype=float32", "--tasks", "stdlib_bpb_general",
               "--include_path", "tasks", "--limit", "6", "--batch_size", "4", "--device", "cpu"],
              repo, timeout=300)
    card = json.loads((repo / "cards/pico.json").read_text())
    value = next(b["value"] for b in card["benchmarks"] if b["task"] == "stdlib_bpb_general")
    assert f"{value:.4f}" in out.stdout  # the CLI reproduces the card's figure


def test_population_lists_the_member(bred):
    repo, _ = bred
    rows = json.loads(run([PY, "-m", "studbook.cli", "population", "--json"], repo).stdout)
    assert [(r["name"], r["verdict"], r["parents"]) for r in rows] == [("pico", "promoted", ["uniform-byte"])]
    shown = run([PY, "-m", "studbook.cli", "show", "pico", "--raw"], repo).stdout
    assert shown == (repo / "cards/pico.md").read_text()
    missing = run([PY, "-m", "studbook.cli", "show", "ghost"], repo, check=False)
    assert missing.returncode == 2 and "no member named 'ghost'" in missing.stderr


# ---- a child: a LoRA adapter with parents chosen by the contract, bred by dvc repro ----

@pytest.fixture(scope="module")
def child(bred) -> tuple[Path, str]:
    repo, _ = bred
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pico bred"], repo)
    run(["git", "checkout", "-q", "-b", "feature-lora"], repo)  # a pull request's branch
    proposed = run([PY, "-m", "studbook.cli", "propose", "pico-lora", "--method", "lora",
                    "--parents", "auto", "--parameters", "{rank: 4, alpha: 8}", "--model", "llama_pico",
                    "--train", "pico", "--data", "tests_niche", "--contract", "stdlib_pico"], repo)
    assert "parents (auto): pico" in proposed.stdout
    result = run([PY, "-m", "dvc", "repro", "generations/pico-lora/dvc.yaml"], repo, timeout=900)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pico-lora bred"], repo)
    return repo, result.stdout + result.stderr


def test_harvest_takes_mining_items_only_with_provenance(bred):
    repo, _ = bred
    rows = [json.loads(l) for l in (repo / "hard_examples/stdlib_pico/pico.jsonl").read_text().splitlines()]
    assert len(rows) == 4  # 2 tasks x per_task 2
    heldout = {json.loads(l)["id"] for f in (repo / "data/benchmarks/heldout").glob("*.jsonl")
               for l in f.read_text().splitlines()}
    mining = {json.loads(l)["id"]: json.loads(l)["text"] for f in (repo / "data/benchmarks/mining").glob("bpb_*.jsonl")
              for l in f.read_text().splitlines()}
    samples = {json.loads(l)["id"]: json.loads(l)["bits_per_byte"] for task in ("general", "tests")
               for l in (repo / f"generations/pico/eval/samples/stdlib_mining_bpb_{task}.jsonl").read_text().splitlines()}
    for row in rows:
        assert row["id"] not in heldout and mining[row["id"]] == row["text"]
        assert row["provenance"]["generation"] == "pico" and row["provenance"]["model"] == "pico"
        assert row["provenance"]["bits_per_byte"] == pytest.approx(samples[row["id"]], abs=1e-6)
    # the hardest: no unharvested item of the same task scores worse
    for task in ("general", "tests"):
        chosen = [r["provenance"]["bits_per_byte"] for r in rows if r["task"].endswith(task)]
        others = [v for k, v in samples.items() if k not in {r["id"] for r in rows} and
                  k in {json.loads(l)["id"] for l in (repo / f"data/benchmarks/mining/bpb_{task}.jsonl").read_text().splitlines()}]
        assert min(chosen) >= max(others)


def test_lora_child_is_a_peft_adapter_pinned_to_its_base(child):
    repo, log = child
    for line in ("method: lora", "kind: adapter", "generation: pico-lora"):
        assert line in log
    # the parent is never re-scored (or re-bred) while its child is: only the child's stages ran
    assert "Running stage 'generations/pico/" not in log
    assert log.count("Running stage 'generations/pico-lora/") == 3  # breed, evaluate, record
    recipe = (repo / "generations/pico-lora/recipe.yaml").read_text()
    assert "selection:" in recipe and "chosen:\n  - pico" in recipe
    code = ("from peft import PeftModel\n"
            "from transformers import AutoModelForCausalLM\n"
            "m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained('models/pico'), 'adapters/pico-lora')\n"
            "print(type(m).__name__, m.peft_config['default'].r)\n")
    assert run([PY, "-I", "-c", code], repo).stdout.strip() == "PeftModelForCausalLM 4"
    card = json.loads((repo / "cards/pico-lora.json").read_text())
    meta = json.loads((repo / "adapters/pico-lora/studbook.json").read_text())
    assert card["base"]["sha256"] == meta["base"]["sha256"] == \
        json.loads((repo / "models/pico/studbook.json").read_text())["weights_sha256"]
    assert card["front_matter"]["base_model_relation"] == "adapter"
    assert card["verdict"] in ("promoted", "rejected") and card["reference_parent"] == "pico"


def test_child_inherits_hard_examples_and_reports_retention(child):
    repo, _ = child
    parent = [json.loads(l) for l in (repo / "hard_examples/stdlib_pico/pico.jsonl").read_text().splitlines()]
    own = [json.loads(l) for l in (repo / "hard_examples/stdlib_pico/pico-lora.jsonl").read_text().splitlines()]
    assert own[:len(parent)] == parent  # inherited first, unchanged
    assert len({r["id"] for r in own}) == len(own) == len(parent) + 4  # deduplicated, 4 new
    card = json.loads((repo / "cards/pico-lora.json").read_text())
    retention = card["retention"]
    assert retention["count"] == len(parent)
    assert set(retention["parents"]) == {"pico"}
    text = (repo / "cards/pico-lora.md").read_text()
    assert f"| pico | {retention['parents']['pico']['bits_per_byte']:.4f} | {len(parent)} |" in text
    # the hard-example set is an lm-eval task: lm-eval's figure for the parent matches the card
    out = run([PY, "-m", "lm_eval", "--model", "hf", "--model_args", "pretrained=models/pico,dtype=float32",
               "--tasks", "hard_stdlib_pico_pico", "--include_path", "hard_examples/stdlib_pico",
               "--batch_size", "4", "--device", "cpu"], repo, timeout=300).stdout
    line = next(l for l in out.splitlines() if "bits_per_byte" in l)
    value = float([c for c in line.split("|") if c.strip()][-3 if "±" in line else -1].strip())
    assert value == pytest.approx(retention["parents"]["pico"]["bits_per_byte"], rel=5e-3)


def test_whole_lineage_repro_is_a_noop(child):
    repo, _ = child
    again = run([PY, "-m", "dvc", "repro", "generations/pico-lora/dvc.yaml"], repo)
    assert "Running stage" not in again.stdout


# ---- Hub-ready members: each folder carries its card as README.md; `studbook publish` ----

def published(repo: Path, *args: str, check: bool = True):
    return run([PY, "-m", "studbook.cli", "publish", *args], repo, check=check)


def listed(stdout: str) -> dict[str, tuple[int, str]]:
    """The dry run's file lines: path -> (bytes, sha256)."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and len(parts[2]) == 64 and parts[1].replace(",", "").isdigit():
            rows[parts[0]] = (int(parts[1].replace(",", "")), parts[2])
    return rows


def files_of(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


MEMBERS = (("pico", "models/pico"), ("pico-lora", "adapters/pico-lora"))


def test_member_folders_carry_their_card_as_readme_outside_dvc(child):
    repo, _ = child
    for name, folder in MEMBERS:  # written by the record stage under `dvc repro`
        assert (repo / folder / "README.md").read_bytes() == (repo / f"cards/{name}.md").read_bytes()
    # .dvcignore keeps it out of the folder's hash: the lock counts the folder without it,
    # nothing is out of date, a checkout leaves it, git does not see it
    import yaml

    lock = yaml.safe_load((repo / "generations/pico/dvc.lock").read_text())
    out = next(o for o in lock["stages"]["breed"]["outs"] if o["path"] == "models/pico")
    assert out["nfiles"] == len(files_of(repo / "models/pico")) - 1
    assert "up to date" in run([PY, "-m", "dvc", "status"], repo).stdout
    run([PY, "-m", "dvc", "checkout", "--force"], repo)
    assert (repo / "models/pico/README.md").read_bytes() == (repo / "cards/pico.md").read_bytes()
    assert "README.md" not in run(["git", "status", "--porcelain", "--untracked-files=all"], repo).stdout


def test_model_card_load_parses_both_readmes(child):
    from huggingface_hub import ModelCard

    repo, _ = child
    model = ModelCard.load(repo / "models/pico/README.md").data
    adapter = ModelCard.load(repo / "adapters/pico-lora/README.md").data
    assert (model.library_name, adapter.library_name) == ("transformers", "peft")
    assert model.pipeline_tag == adapter.pipeline_tag == "text-generation"
    assert model.license == adapter.license == "unknown"  # neither recipe nor contract names one
    assert "base_model" not in model.to_dict() and "base_model_relation" not in model.to_dict()  # a founder
    assert adapter.base_model == ["pico"] and adapter.to_dict()["base_model_relation"] == "adapter"
    card = json.loads((repo / "cards/pico-lora.json").read_text())
    scores = {(r.dataset_name, r.metric_type): r.metric_value for r in adapter.eval_results}
    assert len(scores) == len(card["benchmarks"])
    for bench in card["benchmarks"]:
        assert scores[(bench["task"], bench["metric"])] == pytest.approx(bench["value"], abs=1e-4)


def test_publish_dry_run_lists_exactly_the_member_and_its_card(child):
    from studbook.core.atomic import sha256_bytes

    repo, _ = child
    for name, folder in MEMBERS:
        out = published(repo, name, f"acme/{name}", "--dry-run").stdout
        print(out)
        rows, files = listed(out), files_of(repo / folder)
        assert set(rows) == set(files)  # every file of the folder, README.md from the card
        for path, file in files.items():
            expected = file.read_bytes() if path != "README.md" else \
                (repo / f"cards/{name}.md").read_bytes()  # no parent has a Hub id yet
            if name == "pico-lora" and path == "README.md":  # so `pico` is left out of base_model
                text = expected.decode()
                assert "base_model:\n- pico\n" in text and "base_model_relation: adapter\n" in text
                expected = text.replace("base_model:\n- pico\n", "").replace(
                    "base_model_relation: adapter\n", "").encode()
            assert rows[path] == (len(expected), sha256_bytes(expected)), path
        assert f"files: {len(files)}" in out and f"repo_id: acme/{name}" in out
    assert "base_model: pico has no Hub id" in out


def test_the_adapter_loads_with_peft_exactly_as_published(child, tmp_path):
    import torch
    from huggingface_hub import ModelCard
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    repo, _ = child
    staged = tmp_path / "upload"
    out = published(repo, "pico-lora", "acme/pico-lora", "--to", str(staged),
                    "--base-model", "pico=acme/pico").stdout
    rows = listed(out)
    from studbook.core.atomic import sha256_file

    assert {p: (f.stat().st_size, sha256_file(f)) for p, f in files_of(staged).items()} == rows
    assert json.loads((staged / "adapter_config.json").read_text())["base_model_name_or_path"] == "acme/pico"
    card = ModelCard.load(staged / "README.md").data
    assert card.base_model == ["acme/pico"] and card.to_dict()["base_model_relation"] == "adapter"
    assert card.library_name == "peft"
    ids = torch.arange(3, 40).unsqueeze(0)

    def logits(adapter_folder):
        base = AutoModelForCausalLM.from_pretrained(repo / "models/pico")
        with torch.no_grad():
            return PeftModel.from_pretrained(base, str(adapter_folder)).eval()(input_ids=ids).logits

    as_published, as_bred = logits(staged), logits(repo / "adapters/pico-lora")
    torch.testing.assert_close(as_published, as_bred, rtol=0, atol=0)
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(repo / "models/pico").eval()(input_ids=ids).logits
    assert not torch.allclose(as_published, plain)  # the adapter is applied, not ignored


def test_publish_calls_the_hub_and_offline_mode_stops_it_before_anything_goes_up(child, monkeypatch, tmp_path):
    import huggingface_hub

    repo, _ = child
    assert huggingface_hub.constants.is_offline_mode()  # this test must never reach the network
    monkeypatch.setenv("HF_TOKEN", "hf_studbook_test_not_a_token")
    result = published(repo, "pico", "acme/pico", check=False)
    assert result.returncode == 2 and "offline mode is on" in result.stderr
    assert not (repo / "generations/pico/hub.yaml").exists()
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored login either
    result = published(repo, "pico", "acme/pico", check=False)
    assert result.returncode == 2 and "no Hugging Face token" in result.stderr


def test_a_clone_that_only_pulled_publishes_the_same_bytes(child, tmp_path):
    repo, _ = child
    remote = tmp_path / "remote"
    run([PY, "-m", "dvc", "remote", "add", "--local", "publish-test", str(remote)], repo)
    try:
        run([PY, "-m", "dvc", "push", "-r", "publish-test"], repo)
    finally:
        run([PY, "-m", "dvc", "remote", "remove", "--local", "publish-test"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run([PY, "-m", "dvc", "remote", "add", "--local", "publish-test", str(remote)], clone)
    run([PY, "-m", "dvc", "pull", "-r", "publish-test"], clone)
    assert not (clone / "adapters/pico-lora/README.md").exists()  # DVC neither caches nor restores it
    args = ("pico-lora", "acme/pico-lora", "--dry-run", "--base-model", "pico=acme/pico")
    assert listed(published(clone, *args).stdout) == listed(published(repo, *args).stdout)


# ---- two pull requests, each proposing a descendant, merged into main ----

@pytest.fixture(scope="module")
def merged(child) -> Path:
    repo, _ = child
    run(["git", "checkout", "-q", "main"], repo)
    run(["git", "checkout", "-q", "-b", "feature-lora2"], repo)
    run([PY, "-m", "studbook.cli", "propose", "pico-lora2", "--method", "lora", "--parents", "pico",
         "--parameters", "{rank: 2}", "--seed", "7", "--model", "llama_pico", "--train", "pico",
         "--contract", "stdlib_pico"], repo)
    run([PY, "-m", "dvc", "repro", "generations/pico-lora2/dvc.yaml"], repo, timeout=900)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "pico-lora2 bred"], repo)
    run(["git", "checkout", "-q", "main"], repo)
    run(["git", "tag", "before-merges"], repo)
    for number, branch in enumerate(["feature-lora", "feature-lora2"], start=1):
        run(["git", "merge", "-q", "--no-ff", branch, "-m", f"Merge pull request #{number} from {branch}"], repo)
    return repo


def test_two_pull_requests_merge_without_conflicts(merged):
    repo = merged
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert "up to date" in run([PY, "-m", "dvc", "status"], repo).stdout
    assert sorted(p.name for p in (repo / "cards").glob("*.json")) == \
        ["pico-lora.json", "pico-lora2.json", "pico.json"]


def test_lineage_shows_both_descendants_with_their_pull_requests(merged):
    repo = merged
    data = json.loads(run([PY, "-m", "studbook.cli", "lineage", "--format", "json"], repo).stdout)
    edges = sorted((e["parent"], e["child"]) for e in data["edges"])
    assert edges == [("pico", "pico-lora"), ("pico", "pico-lora2")]
    nodes = {n["name"]: n for n in data["nodes"]}
    pico_sha = json.loads((repo / "models/pico/studbook.json").read_text())["weights_sha256"]
    assert nodes["pico"]["sha256"] == pico_sha
    assert nodes["pico"]["arrived"]["merge"] is None  # committed on main directly
    assert nodes["pico-lora"]["arrived"]["merge"]["subject"] == "Merge pull request #1 from feature-lora"
    assert nodes["pico-lora2"]["arrived"]["merge"]["subject"] == "Merge pull request #2 from feature-lora2"
    text = run([PY, "-m", "studbook.cli", "lineage", "pico-lora"], repo).stdout
    assert text.splitlines()[0].startswith("pico [model, scratch, promoted]")
    assert "└─ pico-lora [adapter, lora," in text and "pico-lora2" not in text
    assert "cumulative to pico-lora: 2 generations, 4,096 tokens" in text
    mermaid = run([PY, "-m", "studbook.cli", "lineage", "--format", "mermaid"], repo).stdout
    assert "n_pico --> n_pico_lora" in mermaid and "n_pico --> n_pico_lora2" in mermaid


def test_card_diff_reports_deltas_and_fails_on_a_guarded_regression(merged):
    repo = merged
    same = run([PY, "-m", "studbook.cli", "card", "diff", "main", "main"], repo)
    assert "no changes" in same.stdout and same.returncode == 0
    diff = run([PY, "-m", "studbook.cli", "card", "diff", "before-merges", "feature-lora"], repo)
    card = json.loads((repo / "cards/pico-lora.json").read_text())
    bench = card["benchmarks"][0]
    assert "## added: `pico-lora`" in diff.stdout and "pico-lora2" not in diff.stdout.split("## Lineage")[0]
    delta = bench["parents"][0]["delta"]
    mark = "➖ unchanged" if round(delta, 4) == 0 else \
        "✅ better" if (delta > 0) == (bench["direction"] == "higher") else "❌ worse"
    assert (f"| {bench['task']} | {bench['metric']} | {bench['value']:.4f} | "
            f"{delta if round(delta, 4) else 0.0:+.4f} {mark} |") in diff.stdout
    assert "n_pico --> n_pico_lora" in diff.stdout and diff.returncode == 0
    # inject a regression: a re-bred pico whose guarded accuracy drops beyond its tolerance
    run(["git", "checkout", "-q", "-b", "regress"], repo)
    path = repo / "cards/pico.json"
    original = path.read_text()
    pico = json.loads(original)
    guarded = next(b for b in pico["benchmarks"] if b["task"] == "stdlib_nextline_general")
    guarded["value"] = guarded["value"] - 0.6  # tolerance 0.5
    path.write_text(json.dumps(pico, indent=2, sort_keys=True))
    run(["git", "commit", "-qam", "re-bred pico"], repo)
    try:
        bad = run([PY, "-m", "studbook.cli", "card", "diff", "main", "regress"], repo, check=False)
        assert bad.returncode == 1
        lines = bad.stdout.splitlines()
        assert lines[2] == "**⚠ 1 guarded regression(s) beyond tolerance**"
        assert "| pico | stdlib_nextline_general | acc | -0.6000 ❌ worse | 0.5000 | its previous card |" in bad.stdout
        assert "## changed: `pico` — promoted → promoted" in bad.stdout
    finally:
        run(["git", "checkout", "-q", "main"], repo)


def test_a_fresh_clone_pulls_members_from_a_dvc_remote_without_rebreeding(merged, tmp_path):
    repo = merged
    remote = tmp_path / "dvc-remote"
    run([PY, "-m", "dvc", "remote", "add", "-d", "team", str(remote)], repo)
    run(["git", "commit", "-qam", "DVC remote for the population"], repo)
    pushed = run([PY, "-m", "dvc", "push"], repo)
    assert "pushed" in pushed.stdout
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run([PY, "-m", "dvc", "pull"], clone)
    for path in ("models/pico", "adapters/pico-lora", "adapters/pico-lora2"):
        meta = json.loads((clone / path / "studbook.json").read_text())
        assert meta["weights_sha256"] == json.loads((repo / path / "studbook.json").read_text())["weights_sha256"]
    status = run([PY, "-m", "dvc", "status"], clone).stdout
    assert "up to date" in status  # everything pulled matches the locks: nothing to re-breed
    again = run([PY, "-m", "dvc", "repro", "generations/pico-lora2/dvc.yaml"], clone)
    assert "Running stage" not in again.stdout
