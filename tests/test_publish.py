"""Hub-ready members, without breeding: the license key, the Hub's card keys, the README
that goes up, and the `.dvcignore` design checked with real DVC on a toy pipeline.

The members bred by `dvc repro` (a pico model and its LoRA adapter) are published, dry run
and staged, loaded by `ModelCard.load` and `PeftModel.from_pretrained`, in
tests/test_founder_e2e.py, which breeds them anyway.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, git_dvc_init, run
from studbook.core.errors import StudbookError

PY = sys.executable
RECIPE = """defaults:
  - contract: {contract}
  - model: llama_pico
  - train: pico
  - data: stdlib_all
  - _self_

name: x
method: scratch
seed: 0
{extra}"""


def compose(contract_license: str | None, recipe_license: str | None):
    from studbook.repository.recipes import compose_recipe

    contract = (Path("conf/contract/stdlib_pico.yaml").read_text()
                + (f"license: {contract_license}\n" if contract_license else ""))
    Path("conf/contract/licensed.yaml").write_text(contract)
    Path("generations/x").mkdir(parents=True, exist_ok=True)
    Path("generations/x/recipe.yaml").write_text(RECIPE.format(
        contract="licensed", extra=f"license: {recipe_license}\n" if recipe_license else ""))
    return compose_recipe("generations/x/recipe.yaml").recipe


def test_license_comes_from_the_recipe_else_the_contract_else_unknown(skeleton):
    assert compose(None, None).effective_license.front_matter() == {"license": "unknown"}
    assert compose("apache-2.0", None).effective_license.front_matter() == {"license": "apache-2.0"}
    assert compose("apache-2.0", "mit").effective_license.front_matter() == {"license": "mit"}
    other = compose("apache-2.0", "{id: other, name: team-model-licence, link: LICENSE.md}")
    assert other.effective_license.front_matter() == {
        "license": "other", "license_name": "team-model-licence", "license_link": "LICENSE.md"}


@pytest.mark.parametrize("value,message", [
    ("apache2", "'apache2' is not a Hugging Face Hub license identifier"),
    ("cc-by", "did you mean"),
    ("other", "`other` needs a `name`"),
    ("{id: mit, name: mine}", "known by its id"),
    ("{id: other, name: Our Licence}", "not a lower-case slug"),
    ("{id: other, name: ours, link: 'javascript:alert(1)'}", "neither an http(s) URL nor a file name"),
    ("{id: mit, url: x}", "unknown key"),
])
def test_a_bad_license_fails_naming_the_file_and_key(skeleton, value, message):
    with pytest.raises(StudbookError) as info:
        compose(value, None)
    assert info.value.file == "conf/contract/licensed.yaml" and info.value.key.startswith("contract.license")
    assert message in str(info.value)
    with pytest.raises(StudbookError) as info:
        compose(None, value)
    assert info.value.file == "generations/x/recipe.yaml" and info.value.key.startswith("license")


META = {"name": "child", "kind": "model", "contract": "stdlib_code",
        "parents": [{"name": "teacher", "sha256": "a" * 64}]}


def test_hub_keys_per_kind_and_relation():
    from studbook.evidence.cards import hub_front_matter

    founder = hub_front_matter({**META, "parents": []}, None, "founder", None)
    assert founder == {"library_name": "transformers", "pipeline_tag": "text-generation",
                       "license": "unknown", "tags": ["studbook", "stdlib_code"]}
    # a distilled student: `finetune` to the Hub (its vocabulary), distillation to studbook
    student = hub_front_matter(META, "finetune", "distillation", {"license": "mit"})
    assert student["base_model"] == ["teacher"] and student["base_model_relation"] == "finetune"
    assert student["tags"] == ["studbook", "stdlib_code", "distillation"] and student["license"] == "mit"
    # an adapter's base model is the model it applies to, not its parents (an adapter merge's
    # parents are adapters; an extracted LoRA's are the full child and its base)
    merged = hub_front_matter({**META, "kind": "adapter", "parents": [{"name": "a1"}, {"name": "a2"}],
                               "base": {"name": "founder", "sha256": "b" * 64}}, "adapter", "adapter", None)
    assert merged["library_name"] == "peft" and merged["base_model"] == ["founder"]
    assert merged["base_model_relation"] == "adapter" and merged["tags"] == ["studbook", "stdlib_code"]


CARD = """---
base_model:
- a
- b
base_model_relation: merge
library_name: transformers
studbook:
  parents:
  - name: a
    sha256: null
---

# child
"""


def test_the_hub_readme_names_parents_by_hub_id_or_leaves_them_out():
    from studbook.repository.publish import hub_readme

    assert hub_readme(CARD, {"a": "acme/a", "b": "acme/b"}) == CARD.replace("- a\n- b\n", "- acme/a\n- acme/b\n")
    assert hub_readme(CARD, {"b": "acme/b"}) == CARD.replace("- a\n- b\n", "- acme/b\n")
    assert hub_readme(CARD, {}) == CARD.replace("base_model:\n- a\n- b\nbase_model_relation: merge\n", "")
    founder = CARD.replace("base_model:\n- a\n- b\nbase_model_relation: merge\n", "")
    assert hub_readme(founder, {"a": "acme/a"}) == founder  # byte for byte
    with pytest.raises(StudbookError, match="front matter"):
        hub_readme("# no front matter\n", {})


@pytest.mark.parametrize("bad", ["acme", "acme/", "/x", "acme/x/y", "acme/x y", "acme/../x", "a--b/x"])
def test_repository_ids_are_checked(bad):
    from studbook.repository.publish import check_repo_id, parse_overrides

    with pytest.raises(StudbookError, match="not a Hub repository id"):
        check_repo_id(bad)
    assert parse_overrides(["pico=acme/pico-1.0"]) == {"pico": "acme/pico-1.0"}
    with pytest.raises(StudbookError, match="PARENT=ORG/NAME"):
        parse_overrides(["acme/pico"])


# ---- the .dvcignore design, with real DVC (dvc 3.67) on a two-stage toy pipeline ----

BREED = """import pathlib
out = pathlib.Path("models/toy")
out.mkdir(parents=True, exist_ok=True)
(out / "model.safetensors").write_bytes(b"weights")
(out / "config.json").write_text("{}")
"""
RECORD = """import pathlib
files = sorted(p.name for p in pathlib.Path("models/toy").iterdir())
pathlib.Path("card.md").write_text("read: " + ", ".join(files) + "\\n")
"""
PIPELINE = {"stages": {
    "breed": {"cmd": "python breed.py", "deps": ["breed.py"], "outs": ["models/toy"]},
    "record": {"cmd": "python record.py", "deps": ["record.py", "models/toy"],
               "outs": [{"card.md": {"cache": False}}]}}}


def dvc(repo: Path, *args: str, check: bool = True):
    return run([PY, "-m", "dvc", *args], repo, check=check)


def test_dvcignore_keeps_the_member_readme_out_of_dvc(tmp_path, monkeypatch):
    from studbook.repository.readme import write_member_readme

    repo = tmp_path / "toy"
    repo.mkdir()
    shutil.copy2(ROOT / ".dvcignore", repo / ".dvcignore")  # the project's own entries
    (repo / "breed.py").write_text(BREED)
    (repo / "record.py").write_text(RECORD)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    git_dvc_init(repo)
    dvc(repo, "repro")
    lock = (repo / "dvc.lock").read_text()
    monkeypatch.chdir(repo)
    text = "---\nlibrary_name: transformers\n---\n\n# toy\n"
    assert write_member_readme("models/toy", text) == "models/toy/README.md"
    readme = repo / "models/toy/README.md"
    assert readme.read_text() == text
    # not an input or output of anything: nothing to re-run, the hashes in the lock stand
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    again = dvc(repo, "repro").stdout
    assert "Running stage" not in again and (repo / "dvc.lock").read_text() == lock
    dvc(repo, "commit", "--force")  # re-hashing the folder gives the same hash
    assert (repo / "dvc.lock").read_text() == lock
    # a checkout keeps it, also when it restores a file of the folder from the cache
    dvc(repo, "checkout", "--force")
    assert readme.read_text() == text
    (repo / "models/toy/config.json").unlink()
    assert "models/toy" in dvc(repo, "status").stdout  # a real change is still seen
    dvc(repo, "checkout", "--force", "models/toy")
    assert (repo / "models/toy/config.json").read_text() == "{}" and readme.read_text() == text
    assert "Data and pipelines are up to date" in dvc(repo, "status").stdout
    # without the entry: the alternative, the README as an output of the stage that writes
    # the card, is refused by DVC; and a README in the folder would change its hash
    (repo / ".dvcignore").write_text("")
    overlapping = yaml.safe_load(yaml.safe_dump(PIPELINE))
    overlapping["stages"]["record"]["outs"].append({"models/toy/README.md": {"cache": False}})
    (repo / "dvc.yaml").write_text(yaml.safe_dump(overlapping))
    refused = dvc(repo, "repro", "--dry", check=False)  # (`dvc status` does not check it)
    assert refused.returncode != 0 and "overlap" in (refused.stdout + refused.stderr)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    assert re.search(r"modified:\s+models/toy\n", dvc(repo, "status").stdout)
    # so a repository whose .dvcignore lacks the entry gets no README, not a dirty stage
    readme.unlink()
    assert write_member_readme("models/toy", text).startswith("not written")
    assert not readme.exists()


def test_every_method_speaks_the_hubs_relation_vocabulary():
    """`base_model_relation` takes the Hub's values only (a founder has none); studbook's own
    relation (distillation, import, …) stays in the card's `studbook` block."""
    from studbook.operators import methods

    for name in methods.known():
        method = methods.get(name)
        assert method.base_model_relation in (None, "adapter", "merge", "quantized", "finetune"), name
        assert (method.base_model_relation is None) == (method.max_parents == 0), name
    assert methods.get("distill").base_model_relation == "finetune"
    assert methods.get("distill").relation == "distillation"
