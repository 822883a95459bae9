"""`studbook publish NAME REPO_ID`: a member, exactly as it is here, to the Hugging Face Hub.

What goes up is planned first, offline (`plan`): every file of the member folder
(`models/NAME/` or `adapters/NAME/`: safetensors weights, config, tokenizer,
`studbook.json`), checked as the stages check it (safetensors only, no link, no remote
code) and only if its weights are the ones its card describes; and `README.md`, written
from `cards/NAME.md`, the git-tracked card (so a clone that only ran `dvc pull` publishes
the same bytes). The dry run prints that plan, file by file with size and sha256; `--to`
writes it to a folder; the upload sends that folder with `HfApi.upload_folder`.

Names become Hub ids on the way: the card names its parents as studbook members, and the
Hub accepts only repository ids in `base_model` (it refuses a push whose README names
something else). A parent's id comes from `--base-model PARENT=ORG/NAME`, else from
`generations/PARENT/hub.yaml`, which a successful publish writes (and a team may write by
hand for an imported founder that came from the Hub). One small file per member, not one
shared map, so two pull requests that publish two members do not conflict. A parent
without an id is left out of `base_model` (it stays in the card's `studbook.parents`, by
name and sha256); an adapter's `adapter_config.json` names its base by Hub id when known,
so PEFT's `AutoPeftModelForCausalLM` finds it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from studbook.core.errors import StudbookError

HUB_FILE = "hub.yaml"  # generations/NAME/hub.yaml: where NAME was published (git-tracked)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Upload:
    """One file of the upload: a file of the member folder as it is (`source`), or bytes
    written for the Hub (`data`: README.md, an adapter config naming its base's Hub id)."""

    path: str  # in the Hub repository (POSIX)
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None
    origin: str = ""  # where the bytes come from, when they are not `source`


@dataclass(frozen=True)
class Plan:
    name: str
    kind: str
    verdict: str
    folder: Path
    repo_id: str
    files: tuple[Upload, ...]
    weights_sha256: str
    license: str
    base_models: dict[str, str | None] = field(default_factory=dict)  # member -> Hub id (None: unknown)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def check_repo_id(repo_id: str, key: str = "REPO_ID") -> str:
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise StudbookError(f"'{repo_id}' is not a Hub repository id (ORG/NAME: letters, digits, "
                            "'.', '_', '-')", key=key)
    return repo_id


def published_id(name: str) -> str | None:
    """The Hub id recorded for a member by `studbook publish` (generations/NAME/hub.yaml)."""
    from studbook.core.config import load_yaml
    from studbook.repository.card_files import NAME

    file = Path("generations") / name / HUB_FILE
    if not NAME.match(name) or not file.is_file():
        return None
    data = load_yaml(file)
    repo_id = data.get("repo_id") if isinstance(data, dict) else None
    if repo_id is None:
        raise StudbookError("no repo_id", file=str(file), key="repo_id")
    try:
        return check_repo_id(repo_id)
    except StudbookError as exc:
        raise StudbookError(exc.detail, file=str(file), key="repo_id") from None


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """`--base-model PARENT=ORG/NAME`, repeatable."""
    mapped: dict[str, str] = {}
    for pair in pairs:
        name, sep, repo_id = pair.partition("=")
        if not sep or not name:
            raise StudbookError(f"'{pair}' is not PARENT=ORG/NAME", key="--base-model")
        mapped[name.strip()] = check_repo_id(repo_id.strip(), key="--base-model")
    return mapped


def split_card(text: str, file: str) -> tuple[dict, str]:
    """A card's YAML front matter (as data) and everything after it."""
    import yaml

    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        raise StudbookError("a card starts with YAML front matter between '---' lines", file=file)
    end = text.index("\n---\n", 3)
    front = yaml.safe_load(text[4:end + 1])
    if not isinstance(front, dict):
        raise StudbookError("the front matter is not a mapping", file=file)
    return front, text[end + len("\n---\n"):]


def hub_readme(card_text: str, hub_ids: dict[str, str | None], file: str = "card") -> str:
    """The card as the Hub reads it: `base_model` names Hub ids (members without one are
    left out; with none left, so is `base_model_relation`). Pure; a card without parents
    comes back byte for byte, and only the base_model lines change otherwise."""
    import yaml

    front, body = split_card(card_text, file)
    if "base_model" not in front:
        return card_text
    names = front["base_model"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StudbookError("base_model is a list of member names", file=file, key="base_model")
    ids = [hub_ids.get(name) for name in names]
    front["base_model"] = [i for i in ids if i]
    if not front["base_model"]:
        front.pop("base_model")
        front.pop("base_model_relation", None)
    # the dump the card itself was rendered with (evidence.cards._to_yaml)
    dumped = yaml.safe_dump(front, sort_keys=True, allow_unicode=True, width=100).rstrip("\n")
    return f"---\n{dumped}\n---\n{body}"


def member_files(folder: Path) -> list[Path]:
    """The files of a member folder that go up: all but README.md (written from the card)
    and hidden entries (a writer's temporaries `.NAME.tmp-PID-…`)."""
    from studbook.operators.artifacts import check_safe_folder

    check_safe_folder(folder)  # safetensors only, no link, no remote code: as the stages read it
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.as_posix() != "README.md" and not any(p.startswith(".") for p in rel.parts):
            found.append(path)
    return found


def plan(name: str, repo_id: str, overrides: dict[str, str] | None = None) -> Plan:
    """What `publish` would upload, computed offline; refuses a member whose folder is not
    here or whose weights are not those of its card."""
    from studbook.core.atomic import sha256_bytes, sha256_file
    from studbook.operators.artifacts import weights_sha256
    from studbook.repository.generation import GenerationPaths
    from studbook.repository.population import member

    check_repo_id(repo_id)
    card = member(name)
    paths = GenerationPaths(name)
    folder = paths.artifact(card["kind"])
    if not (folder / "studbook.json").is_file():
        raise StudbookError(f"{folder} is not here: `dvc pull {folder}` (or `dvc repro "
                            f"{paths.dvc_yaml}`) first", file=str(folder))
    found = weights_sha256(folder)
    if found != card["weights_sha256"]:
        raise StudbookError(f"the weights in {folder} (sha256 {found[:12]}…) are not the ones its card "
                            f"describes ({str(card['weights_sha256'])[:12]}…): `dvc checkout {folder}`, "
                            "or re-breed and commit the new card", file=str(paths.card), key="weights_sha256")
    text = paths.card.read_text(encoding="utf-8")
    front, _ = split_card(text, str(paths.card))
    overrides = overrides or {}
    readme = hub_readme(text, {}, str(paths.card))  # checks the card's base_model first
    bases = {b: overrides.get(b) or published_id(b) for b in front.get("base_model") or []}
    readme = hub_readme(text, bases, str(paths.card)).encode("utf-8")
    files = [Upload("README.md", len(readme), sha256_bytes(readme), data=readme, origin=str(paths.card))]
    base_id = bases.get((card.get("base") or {}).get("name") or "")
    for source in member_files(folder):
        rel = source.relative_to(folder).as_posix()
        if rel == ADAPTER_CONFIG and base_id:
            config = json.loads(source.read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = base_id  # PEFT's pointer to its base
            data = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")
            files.append(Upload(rel, len(data), sha256_bytes(data), data=data,
                                origin=f"{source.as_posix()}, base_model_name_or_path: {base_id}"))
        else:
            files.append(Upload(rel, source.stat().st_size, sha256_file(source), source=source))
    return Plan(name, card["kind"], card["verdict"], folder, repo_id,
                tuple(sorted(files, key=lambda f: f.path)), found, str(front.get("license")), bases)


def listing(p: Plan) -> str:
    """The plan as a reviewer reads it: one line per file (path, bytes, sha256), then notes."""
    width = max(len(f.path) for f in p.files)
    lines = [f"{'path':<{width}}  {'bytes':>13}  sha256"]
    lines += [f"{f.path:<{width}}  {f.size:>13,}  {f.sha256}" for f in p.files]
    lines += [f"member: {p.name} ({p.kind}, {p.verdict}) from {p.folder.as_posix()}",
              f"repo_id: {p.repo_id}", f"files: {len(p.files)}", f"bytes: {p.total_bytes}",
              f"license: {p.license}" + (" (set `license:` in the recipe or its contract)"
                                         if p.license in ("unknown", "None") else "")]
    lines += [f"written: {f.path} from {f.origin}" for f in p.files if f.data is not None]
    for base, repo_id in p.base_models.items():
        lines.append(f"base_model: {base} -> {repo_id}" if repo_id else
                     f"base_model: {base} has no Hub id (left out; `--base-model {base}=ORG/NAME`, "
                     f"or publish it first)")
    return "\n".join(lines) + "\n"


def stage(p: Plan, dest: str | Path) -> Path:
    """Write the upload set to `dest`, a new or empty folder (atomically: a complete folder
    or none). Files of the member folder are hard links where the file system allows (the
    weights are not copied), each checked against the sha256 the plan lists."""
    from studbook.core.atomic import atomic_dir, sha256_file

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StudbookError("exists and is not an empty folder: the upload set goes to a new one",
                            file=str(dest), key="--to")
    with atomic_dir(dest) as tmp:
        for f in p.files:
            target = tmp / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if f.data is not None:
                target.write_bytes(f.data)
                continue
            try:
                os.link(f.source, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(f.source, target)
            if sha256_file(target) != f.sha256:
                raise StudbookError("changed while it was being published", file=str(f.source))
    return dest


def publish(p: Plan, private: bool = False, revision: str | None = None, token: str | None = None) -> dict:
    """Create the repository (if needed) and upload the plan as one commit; the repository
    then holds exactly these files (`delete_patterns="*"` removes what an earlier upload left,
    `.gitattributes` excepted). Records the id in generations/NAME/hub.yaml."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    import yaml

    from studbook.core.atomic import scratch_dir, write_text_atomic
    from studbook.repository.readme import write_member_readme

    token = token or get_token()
    if not token:
        raise StudbookError("no Hugging Face token: set HF_TOKEN, or run `hf auth login`", key="HF_TOKEN")
    api = HfApi(token=token)
    message = f"studbook: {p.name} ({p.kind}, {p.verdict})"
    try:
        api.create_repo(p.repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(p.repo_id, branch=revision, exist_ok=True, repo_type="model")
        with scratch_dir(p.folder) as tmp:  # beside the folder: same file system, links work
            staged = stage(p, tmp / "upload")
            info = api.upload_folder(repo_id=p.repo_id, folder_path=str(staged), repo_type="model",
                                     revision=revision, commit_message=message, delete_patterns="*")
    except OfflineModeIsEnabled:
        raise StudbookError("offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE, as "
                            "scripts/env.sh sets them): run `HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 "
                            "studbook publish …`; --dry-run and --to work offline", key="HF_HUB_OFFLINE") from None
    except HfHubHTTPError as exc:
        raise StudbookError(f"the Hub refused: {exc}", key="REPO_ID") from None
    # the folder's own README.md again (a `dvc pull` does not restore it): the card, as record wrote it
    write_member_readme(p.folder, (Path("cards") / f"{p.name}.md").read_text(encoding="utf-8"))
    record = {"repo_id": p.repo_id, "revision": revision or "main", "commit": info.oid,
              "weights_sha256": p.weights_sha256}
    write_text_atomic(Path("generations") / p.name / HUB_FILE,
                      "# Written by `studbook publish`: where this member is on the Hub; a child's\n"
                      "# card names it by this id (base_model).\n"
                      + yaml.safe_dump(record, sort_keys=False))
    return {**record, "url": info.commit_url}
