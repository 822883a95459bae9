"""Hostile pull requests (issue 13): a task file or recipe may not run code, bomb the
loader or read the environment. Each case is refused before compute, naming file and key,
and a sentinel the payload would write never appears."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studbook.core.errors import StudbookError
from studbook.repository.generation import load_generation
from studbook.repository.proposal import propose

PICO = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}
PAYLOAD = "import pathlib\npathlib.Path({sentinel!r}).write_text('ran')\n\ndef fn(*args, **kwargs):\n" \
          "    pathlib.Path({sentinel!r}).write_text('ran')\n    return args[0] if args else None\n"


@pytest.fixture
def hostile(skeleton, tmp_path):
    """A proposed pico generation, and a payload module outside the task folder that
    writes a sentinel when imported or called."""
    propose("g1", "scratch", [], 1, PICO)
    sentinel = tmp_path / "sentinel"
    for folder in (tmp_path / "elsewhere", skeleton / "elsewhere"):
        folder.mkdir(exist_ok=True)
        (folder / "evil.py").write_text(PAYLOAD.format(sentinel=str(sentinel)))
    return sentinel


def refused(file: str, key: str | None, words: str, name: str = "g1") -> StudbookError:
    with pytest.raises(StudbookError) as info:
        load_generation(name)  # what `studbook check` and the breed stage run first
    error = info.value
    assert (error.file, error.key) == (file, key), str(error)
    assert words in str(error), str(error)
    return error


TASK = "task: evil\ndataset_path: json\noutput_type: loglikelihood_rolling\n" \
       "dataset_kwargs: {data_files: {test: data/benchmarks/heldout/bpb_general.jsonl}}\n"


@pytest.mark.parametrize("files,key,words", [
    # the four bypasses the red team found, then the ones found while closing them
    ({"tasks/evil.yaml": TASK + "process_docs: !<!function> ../elsewhere/evil.fn\n"},
     None, "YAML tag '!<!function>' is not accepted"),
    ({"tasks/evil.yaml": "%TAG !e! !func\n---\n" + TASK + "process_docs: !e!tion evil.fn\n"},
     None, "YAML directives (%TAG, %YAML) are not accepted"),
    ({"tasks/evil.yaml": TASK + "include: ../elsewhere/evil.yaml\n",
      "elsewhere/evil.yaml": "process_docs: !function evil.fn\n"},
     "include", "lies outside the reviewed task folder tasks"),
    ({"tasks/evil.yaml": TASK + "include: evil.txt\n", "tasks/evil.txt": "process_docs: !function evil.fn\n"},
     "include", "a name ending in .yaml or _yaml"),
    ({"tasks/evil.yaml": TASK + "process_docs: !%66unction evil.fn\n"},
     None, "YAML tag '!%66unction' is not accepted"),
    ({"tasks/evil.yaml": TASK + "process_docs: !function ..elsewhere.evil.fn\n"},
     "process_docs", "Python identifiers only"),
    ({"tasks/evil.yaml": TASK + "doc_to_text: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n"},
     "doc_to_text", "Jinja template reaches the private attribute '__"),
    ({"tasks/evil.yaml": TASK + "metric_list:\n  - {metric: bleu, hf_evaluate: true}\n"},
     "metric_list[0].hf_evaluate", "loads a metric's code from the hub"),
    ({"tasks/evil.yaml": TASK + "class: !function evil.fn\n", "tasks/evil.py": "def fn():\n    pass\n"},
     "class", "a Python task class runs code"),
    ({"tasks/evil.yaml": TASK + "custom_dataset: !function evil.fn\n", "tasks/evil.py": "def fn():\n    pass\n"},
     "custom_dataset", "custom dataset loader"),
    ({"tasks/evil.yaml": TASK + "use_prompt: promptsource:evil\n"}, "use_prompt", "promptsource"),
], ids=["verbatim-tag", "tag-directive", "include-outside", "include-not-yaml", "escaped-tag",
        "dotted-path", "jinja-injection", "hf-evaluate", "python-class", "custom-dataset", "promptsource"])
def test_a_task_file_cannot_run_unreviewed_code(hostile, files, key, words):
    for path, text in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    from studbook.evidence.tasks import resolved_task

    before = {p: Path(p).read_bytes() for p in files}
    refused("tasks/evil.yaml", key, words)
    # evaluation resolves its tasks the same way, so lm-eval is never handed the file
    with pytest.raises(StudbookError) as info:
        resolved_task(["tasks"], "evil")
    assert info.value.file == "tasks/evil.yaml" and words in str(info.value)
    assert not hostile.exists()  # the payload never ran
    assert {p: Path(p).read_bytes() for p in files} == before  # nothing changed


def test_a_symlinked_task_file_is_refused(hostile):
    Path("elsewhere/evil.yaml").write_text(TASK + "process_docs: !function evil.fn\n")
    os.symlink(Path("elsewhere/evil.yaml").resolve(), "tasks/evil.yaml")
    refused("tasks/evil.yaml", "task", "goes through the symbolic link tasks/evil.yaml")
    assert not hostile.exists()


def test_a_hook_inside_the_task_folder_is_imported_by_studbook_and_handed_to_lm_eval(skeleton):
    from studbook.evidence.tasks import Hook, resolved_task, task_config

    Path("tasks/utils.py").write_text("def shorten(docs):\n    return docs\n")
    Path("tasks/short.yaml").write_text(TASK.replace("evil", "short") + "process_docs: !function utils.shorten\n")
    config, files = task_config("tasks/short.yaml", "tasks")
    assert config["process_docs"] == Hook("utils.shorten", "tasks/utils.py", "tasks/short.yaml")
    assert files == ["tasks/short.yaml", "tasks/utils.py"]
    resolved = resolved_task(["tasks"], "short")
    assert callable(resolved["process_docs"]) and resolved["process_docs"].__name__ == "shorten"
    assert "include" not in resolved_task(["tasks"], "stdlib_bpb_general")  # merged by studbook


def test_templates_render_in_jinja_s_sandbox():
    from jinja2.exceptions import SecurityError, UndefinedError

    from studbook.evidence.tasks import sandbox

    env = sandbox()
    assert env.from_string("Q: {{ q | regex_replace('x', 'y') }}\n").render(q="xx") == "Q: yy\n"
    with pytest.raises((SecurityError, UndefinedError)):
        env.from_string("{{ q.__class__.__mro__ }}").render(q="")
    with pytest.raises(SecurityError):
        env.from_string("{{ d.clear() }}").render(d={"a": 1})  # immutable: no mutation either


BOMB = ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n")


def _bounded(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_an_alias_bomb_in_a_recipe_is_refused_in_bounded_time_and_memory(hostile):
    recipe = Path("generations/g1/recipe.yaml")
    recipe.write_text(recipe.read_text() + BOMB)
    assert len(BOMB) < 600  # the red team's bomb was 516 bytes
    before = recipe.read_bytes()
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "studbook.cli", "check", "g1"], env=env,
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=_bounded(3 << 30))  # 3 GiB: torch and lm-eval load beside it
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stdout + result.stderr  # studbook's error exit
    assert "generations/g1/recipe.yaml" in result.stderr + result.stdout
    assert "more than 100,000 nodes once aliases are expanded" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert elapsed < 60, elapsed  # it ran past 300 s before; this bounds the loader, not speed
    assert recipe.read_bytes() == before


@pytest.mark.parametrize("text,key,words", [
    ("seed: ${oc.env:RT_SEED}\n", "seed", "`${oc.env:…}` reads a value the recipe does not hold"),
    ("parameters: {lr: '${now:%s}'}\n", "parameters.lr", "`${now:…}`"),
    ("hydra: {searchpath: [file:///tmp]}\n", "hydra", "`hydra` is not accepted"),
], ids=["oc-env", "now", "hydra-settings"])
def test_a_recipe_reads_nothing_but_its_own_values(hostile, monkeypatch, text, key, words):
    monkeypatch.setenv("RT_SEED", "7")
    recipe = Path("generations/g1/recipe.yaml")
    lines = [line for line in recipe.read_text().splitlines(keepends=True)
             if not line.startswith(text.split(":")[0] + ":")]
    recipe.write_text("".join(lines) + text)
    refused("generations/g1/recipe.yaml", key, words)


def test_a_group_file_may_not_pull_in_other_files(hostile):
    model = Path("conf/model/llama_pico.yaml")
    model.write_text("defaults:\n  - /elsewhere/evil\n" + model.read_text())
    refused("conf/model/llama_pico.yaml", "defaults", "`defaults` is not accepted")


@pytest.mark.parametrize("option", ["../../elsewhere/evil", "/etc/passwd"])
def test_a_recipe_option_is_a_name_not_a_path(hostile, option):
    recipe = Path("generations/g1/recipe.yaml")
    recipe.write_text(recipe.read_text().replace("model: llama_pico", f"model: '{option}'"))
    refused("generations/g1/recipe.yaml", "defaults[1].model", "is not an option name")


@pytest.mark.parametrize("text,words", [
    ("seed: 1\nseed: 2\n", "key 'seed' appears twice"),
    ("%YAML 1.1\n---\nseed: 1\n", "YAML directives"),
    ("seed: !!python/object/apply:os.system ['touch sentinel']\n", "YAML tag '!!python/object/apply:os.system'"),
    ("seed: " + "[" * 100 + "]" * 100 + "\n", "nested deeper than 64 levels"),
], ids=["duplicate-key", "directive", "python-tag", "deep"])
def test_the_strict_loader_refuses_what_a_reviewer_would_misread(hostile, text, words):
    recipe = Path("generations/g1/recipe.yaml")
    recipe.write_text(recipe.read_text().replace("seed: 1\n", "") + text)
    refused("generations/g1/recipe.yaml", None, words)
    assert not Path("sentinel").exists()


def test_a_contract_is_loaded_by_the_strict_loader_too(hostile):
    contract = Path("conf/contract/stdlib_pico.yaml")
    contract.write_text(contract.read_text() + "description: a second description\n")
    refused("conf/contract/stdlib_pico.yaml", None, "key 'description' appears twice")
