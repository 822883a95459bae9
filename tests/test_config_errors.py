"""Bad input fails before any compute, naming the file and the key, changing nothing."""

from pathlib import Path

import pytest

from studbook.core.errors import StudbookError
from studbook.repository.generation import load_generation
from studbook.repository.proposal import propose

PICO = {"contract": "stdlib_pico", "model": "llama_pico", "train": "pico", "data": "stdlib_all"}


def proposed(name: str = "g1") -> Path:
    propose(name, "scratch", [], 1, PICO)
    return Path("generations") / name / "recipe.yaml"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def expect(name: str, file: str, key: str | None, words: str) -> StudbookError:
    with pytest.raises(StudbookError) as info:
        load_generation(name)
    error = info.value
    assert error.file == file, str(error)
    assert error.key == key, str(error)
    assert words in str(error) and file in str(error)
    return error


def test_a_valid_recipe_loads(skeleton):
    recipe_file = proposed()
    resolved = load_generation("g1")
    assert resolved.recipe.model.config["hidden_size"] == 32
    assert resolved.group_files["model"] == "conf/model/llama_pico.yaml"
    dvc_yaml = (recipe_file.parent / "dvc.yaml").read_text()
    for dep in ("conf/model/llama_pico.yaml", "conf/train/pico.yaml", "conf/contract/stdlib_pico.yaml"):
        assert dep in dvc_yaml


RECIPE = "generations/g1/recipe.yaml"
MALFORMED_MODEL = "architecture: llama\n  context_length: : 3\n"

# (file edited, old text, new text, file blamed, key blamed, words in the message);
# old=None replaces the whole file with new.
CASES = {
    "unknown key in recipe": (RECIPE, "seed: 1\n", "seed: 1\nlearning_rate: 3\n",
                              RECIPE, "learning_rate", "unknown key"),
    "unknown key in group file": ("conf/train/pico.yaml", "steps: 4", "steps: 4\nepochs: 2",
                                  "conf/train/pico.yaml", "train.epochs", "unknown key"),
    "recipe override blamed on recipe": (RECIPE, "seed: 1\n", "seed: 1\ntrain:\n  steps: -3\n",
                                         RECIPE, "train.steps", "greater than or equal to 0"),
    "unknown method": (RECIPE, "method: scratch", "method: frankenmerge",
                       RECIPE, "method", "unknown method 'frankenmerge' (known: adapter_merge, arcee_fusion"),
    "missing contract": (RECIPE, "contract: stdlib_pico", "contract: nonexistent",
                         RECIPE, "defaults[0].contract", "no contract named 'nonexistent'"),
    "scratch takes no parents": (RECIPE, "parents: []", "parents: [ghost]",
                                 RECIPE, "parents", "takes 0 parent(s), got 1"),
    "malformed recipe YAML": (RECIPE, "seed: 1\n", "seed: [1\n", RECIPE, None, "malformed YAML"),
    "malformed group YAML": ("conf/model/llama_pico.yaml", None, MALFORMED_MODEL,
                             "conf/model/llama_pico.yaml", None, "malformed YAML"),
    "wrong value in contract": ("conf/contract/stdlib_pico.yaml", "direction: lower",
                                "direction: sideways", "conf/contract/stdlib_pico.yaml",
                                "contract.primary.direction", "'lower' or 'higher'"),
    "hydra _target_ refused": (RECIPE, "seed: 1\n", "seed: 1\n_target_: os.system\n",
                               RECIPE, "_target_", "unknown key"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_names_file_and_key(skeleton, case):
    edited, old, new, file, key, words = CASES[case]
    proposed()
    if old is None:
        Path(edited).write_text(new)
    else:
        edit(Path(edited), old, new)
    expect("g1", file, key, words)


def test_missing_benchmark(skeleton):
    proposed()
    edit(Path("conf/contract/stdlib_pico.yaml"), "task: stdlib_bpb_tests, metric",
         "task: stdlib_bpb_moon, metric")
    # the primary list still names stdlib_bpb_tests: fix it so only the task is missing
    edit(Path("conf/contract/stdlib_pico.yaml"), "tasks: [stdlib_bpb_general, stdlib_bpb_tests]",
         "tasks: [stdlib_bpb_general, stdlib_bpb_moon]")
    expect("g1", "conf/contract/stdlib_pico.yaml", "benchmarks[1].task", "no lm-eval task")


def test_missing_parent_is_named(skeleton):
    recipe = proposed()
    edit(recipe, "method: scratch", "method: ties")
    edit(recipe, "parents: []", "parents: [g1, ghost]")
    expect("g1", str(recipe), "parents[0]", "a generation cannot be its own parent")
    edit(recipe, "parents: [g1, ghost]", "parents: [ghost, other]")
    expect("g1", str(recipe), "parents[0]", "parent 'ghost' does not exist")


def test_stale_dvc_yaml_is_caught(skeleton):
    recipe = proposed()
    Path("conf/model/llama_pico2.yaml").write_text(Path("conf/model/llama_pico.yaml").read_text())
    edit(recipe, "model: llama_pico", "model: llama_pico2")
    expect("g1", str(recipe), "defaults.model", "--refresh")


def test_bad_proposal_leaves_nothing(skeleton):
    with pytest.raises(StudbookError) as info:
        propose("g2", "scratch", [], 1, {**PICO, "contract": "nope"})
    assert "no contract named 'nope'" in str(info.value)
    with pytest.raises(StudbookError, match="unknown method"):
        propose("g3", "nope", [], 1, PICO)
    with pytest.raises(StudbookError, match="not a valid generation name"):
        propose("Bad Name", "scratch", [], 1, PICO)
    assert not Path("generations").exists() or not any(Path("generations").iterdir())
