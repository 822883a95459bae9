"""Stage breed: the child's weights — made by its method from its parents, then trained.

`merge_or_distill(parents, recipe)` then `train_on(data, bounded budget)`: the
compatibility contract is checked first, from the parents' headers, so a mismatch stops
before any weight is computed. The initial weights live in a scratch folder; only the
trained artifact (`models/NAME` or `adapters/NAME`, written atomically) and the training
log (`generations/NAME/live`) are outputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from studbook.core.atomic import atomic_dir, canonical_json, sha256_bytes
from studbook.repository.generation import Generation, GenerationPaths

LAUNCHABLE = True  # runs under STUDBOOK_LAUNCHER (`accelerate launch …`) when one is set


def _context(gen: Generation, out_dir: Path):
    from studbook.repository.refs import BreedContext

    return BreedContext(recipe=gen.recipe, params=gen.resolved.parameters, parents=gen.parents,
                        out_dir=out_dir, contract_name=gen.contract_name,
                        recipe_file=gen.resolved.recipe_file)


def check(gen: Generation, deferred: list[str] | None = None) -> dict | None:
    """Every check the breed stage makes before compute; `studbook check` runs the same.

    The compatibility contract from the parents' headers, safe folders, the device, the
    tokenizer's end-of-text token and the corpus's text for this split and these niches.
    With `deferred` (a list), what cannot be checked yet — parents not bred, a corpus not
    prepared — is noted there instead of raised; the stage itself passes None.
    """
    from studbook.core import launch
    from studbook.operators.artifacts import check_safe_folder
    from studbook.operators.compat import check_compatibility

    device = launch.check_device()
    if gen.recipe.train.precision == "bf16-mixed" and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_bf16_supported():
            from studbook.core.errors import StudbookError

            raise StudbookError(f"the recipe trains in bf16-mixed, but {device} has no bfloat16",
                                file=gen.file("train"), key="precision")
    if gen.recipe.train.steps:
        _check_corpus(gen, deferred)
    waiting = [p.name for p in gen.parents if not p.exists()]
    if waiting and deferred is not None:
        deferred.append(f"compatibility and tokenizer, when {', '.join(waiting)} are bred")
        return None
    checked = check_compatibility(_context(gen, gen.paths.folder), gen.method, gen.resolved.recipe_file)
    for parent in gen.parents:
        check_safe_folder(parent.path)
    if gen.recipe.train.steps:
        _check_tokenizer(gen)
    return checked


def _check_tokenizer(gen: Generation) -> None:
    """The generation's tokenizer can pack documents (it has an end-of-text token)."""
    from studbook.operators.packing import end_of_text
    from studbook.operators.tokenizer import build_tokenizer, load_tokenizer

    if gen.parents:
        folder = gen.parents[0].path
        tokenizer = load_tokenizer(folder)
    elif gen.method.uses_model_spec:
        folder, tokenizer = None, build_tokenizer(gen.recipe.model.context_length)
    else:  # an import that trains: the source's own tokenizer
        folder = Path(gen.resolved.parameters.source)
        tokenizer = load_tokenizer(folder)
    end_of_text(tokenizer, file=str(folder / "tokenizer_config.json") if folder else None, key="eos_token")


def _check_corpus(gen: Generation, deferred: list[str] | None) -> None:
    """The corpus is one params.yaml writes, and once prepared it has text to train on."""
    from studbook.operators.packing import corpus_texts

    data, where = gen.recipe.data, gen.file("data")
    if not (Path(data.corpus) / f"{data.split}.jsonl").is_file():
        from studbook.core.errors import StudbookError
        from studbook.evidence.corpora import load_corpora

        writers = {Path(c.out): name for name, c in load_corpora().items()}
        if Path(data.corpus) not in writers:
            raise StudbookError(f"no corpus in params.yaml writes {data.corpus} (corpora write: "
                                f"{', '.join(sorted(map(str, writers)))})", file=where, key="corpus")
        if deferred is not None:
            deferred.append(f"training text, when prepare_data_{writers[Path(data.corpus)]} has run")
            return
        raise StudbookError(f"no corpus at {data.corpus} (stage prepare_data_{writers[Path(data.corpus)]} "
                            "has not run)", file=where, key="corpus")
    if not corpus_texts(data.corpus, data.split, data.niches):
        from studbook.core.errors import StudbookError

        raise StudbookError(f"no training text in split '{data.split}' of {data.corpus} for niches "
                            f"{data.niches}", file=where, key="niches")


def make_initial(gen: Generation, out_dir: Path, checked: dict | None = None) -> dict:
    """Initial weights by the recipe's method into `out_dir`; returns the breed record."""
    from studbook.core.numerics import configure_torch

    checked = check(gen) if checked is None else checked
    configure_torch(gen.recipe.seed)
    facts = gen.method.breed(_context(gen, out_dir))
    return {"method": gen.method.name, "kind": gen.kind, "checked": checked, "facts": facts,
            "parents": [{"name": p.name, "kind": p.kind, "sha256": p.sha256} for p in gen.parents]}


def training_sources(gen: Generation, tokenizer) -> list:
    """(packed stream, fraction) sources, tokenized with the generation's own tokenizer:
    the corpus split, the lineage's hard examples, replayed items."""
    from studbook.core.errors import StudbookError
    from studbook.evidence.records import read_evaluation
    from studbook.evidence.harvest import best_items, inherited
    from studbook.operators.packing import corpus_stream, pack

    data, harvest = gen.recipe.data, gen.recipe.contract.harvest
    where = gen.file("data")
    sources = [(corpus_stream(data.corpus, data.split, data.niches, tokenizer, where),
                1.0 - data.hard_examples - data.replay)]
    if data.hard_examples:
        rows = inherited([GenerationPaths(p.name).hard_examples(gen.contract_name) for p in gen.parents])
        if not rows:
            raise StudbookError("data.hard_examples > 0 but the parents left no hard examples for "
                                f"contract '{gen.contract_name}'", file=gen.resolved.recipe_file,
                                key="data.hard_examples")
        sources.append((pack([r["text"] for r in rows], tokenizer, where), data.hard_examples))
    if data.replay:
        if not gen.parents or harvest is None:
            raise StudbookError("data.replay needs parents and a contract with a harvest section",
                                file=gen.resolved.recipe_file, key="data.replay")
        texts = []
        for parent in gen.parents:
            evaluation = read_evaluation(parent.eval_dir)
            texts += best_items(evaluation["samples"], harvest.tasks, data.replay_items,
                                evaluation["results"])
        sources.append((pack(texts, tokenizer, where), data.replay))
    return sources


def _load_trainable(gen: Generation, bred_dir: Path, bred: dict):
    from studbook.core.errors import StudbookError
    from studbook.operators.artifacts import load_model, weights_sha256

    base = bred["facts"].get("base") if gen.kind == "adapter" else None
    if base is None:
        return load_model(bred_dir), None
    from peft import PeftModel

    if weights_sha256(base["path"]) != base["sha256"]:
        raise StudbookError(f"base '{base['name']}' changed since the adapter was bred",
                            file=gen.resolved.recipe_file, key="parents")
    return PeftModel.from_pretrained(load_model(base["path"]), str(bred_dir), is_trainable=True), base


def _record_wall_time(file: Path, weights_sha256: str, figures: dict) -> str:
    """Wall time and host, kept out of every DVC output (they differ run to run).

    `generations/NAME/compute.json` describes the breeding that produced these weights: a
    re-breed that gives the same weights bit for bit keeps it (so the card, and every
    dvc.lock, stay byte-identical); other weights get their own figures.
    """
    from studbook.core.atomic import write_json_atomic

    if file.is_file() and json.loads(file.read_text(encoding="utf-8")).get("weights_sha256") == weights_sha256:
        return "kept (same weights as when first recorded)"
    write_json_atomic(file, {"weights_sha256": weights_sha256, **figures})
    return "recorded"


def run(gen: Generation) -> dict | None:
    """Breed and train generations/NAME into its artifact; returns the stage summary.

    Under `accelerate launch` every process runs this: the main process makes the initial
    weights (and alone writes outputs), the others wait for them and train beside it.
    """
    from studbook.core import launch
    from studbook.core.atomic import scratch_dir

    checked = check(gen)  # nothing is written on a mismatch
    if launch.world_size() == 1:
        with scratch_dir(gen.paths.folder / "bred") as bred_dir:  # initial weights: never an output
            return _train(gen, bred_dir, make_initial(gen, bred_dir, checked))
    if launch.is_main():
        with scratch_dir(gen.paths.folder / "bred") as bred_dir:
            bred = make_initial(gen, bred_dir, checked)
            launch.broadcast((str(bred_dir), bred))
            try:
                return _train(gen, bred_dir, bred)
            finally:
                launch.wait()  # the others have loaded the initial weights before they go
    bred_dir, bred = launch.broadcast(None)
    try:
        _train(gen, Path(bred_dir), bred)
    finally:
        launch.wait()
    return None


def _train(gen: Generation, bred_dir: Path, bred: dict) -> dict | None:
    from contextlib import nullcontext

    from dvclive import Live

    from studbook.core import launch, numerics
    from studbook.operators.artifacts import load_artifact
    from studbook.operators.tokenizer import load_tokenizer
    from studbook.operators.training import TrainResult
    from studbook.operators.training import train as run_training

    recipe, paths = gen.recipe, gen.paths
    numerics.configure_torch(recipe.seed)
    tokenizer = load_tokenizer(bred_dir)
    model, base = _load_trainable(gen, bred_dir, bred)
    teacher = load_artifact(gen.parents[0].path) if gen.method.teaches else None
    probe = None
    if recipe.train.target is not None:
        from studbook.operators.targets import TargetProbe, task_texts

        target = recipe.train.target
        probe = TargetProbe(target, task_texts(target.task, recipe.contract.task_folders, target.items, where=gen.file("train")),
                            tokenizer, recipe.model.context_length,
                            batch_size=recipe.contract.evaluation.batch_size)
        probe.model = model
    main = launch.is_main()
    with atomic_dir(paths.live) if main else nullcontext() as live_dir:
        with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) if main \
                else nullcontext() as live:
            if recipe.train.steps:
                result = run_training(model, training_sources(gen, tokenizer), recipe.train,
                                      recipe.model.context_length, recipe.seed, live=live, teacher=teacher,
                                      distill=gen.resolved.parameters if teacher is not None else None,
                                      should_stop=probe)
            else:
                result = TrainResult(steps=0, tokens=0, seconds=0.0, final_loss=float("nan"), capped=False)
    if not main:
        return None
    return _write_artifact(gen, bred_dir, bred, model, base, tokenizer, teacher, probe, result)


def corpus_record(gen: Generation, trained: bool) -> dict | None:
    """What the card names as the training data: the corpus as its manifest describes it
    (none for an untrained import or merge)."""
    from studbook.evidence.data import read_manifest

    if not trained:
        return None
    manifest = read_manifest(gen.recipe.data.corpus)
    record = {key: manifest[key] for key in ("name", "source", "location", "python_version")
              if key in manifest}
    data = gen.recipe.data
    documents = sum(n.get("documents", n.get("files", 0)) for niche, n in
                    manifest.get("splits", {}).get(data.split, {}).items()
                    if data.niches is None or niche in data.niches)
    return {**record, "folder": data.corpus, "split": data.split, "niches": data.niches,
            "documents": documents, "content_sha256": manifest["content_sha256"]}


def _write_artifact(gen: Generation, bred_dir: Path, bred: dict, model, base, tokenizer, teacher,
                    probe, result) -> dict:
    """The trained artifact and its studbook.json (main process only); returns the summary."""
    from studbook.core import launch, numerics
    from studbook.operators.artifacts import library_versions, parameter_count, save_adapter, \
        save_model, weights_sha256, write_meta
    from studbook.operators.tokenizer import tokenizer_fingerprint
    from studbook.operators.training import flops_estimate

    recipe, paths = gen.recipe, gen.paths
    model = model.to("cpu")  # saved from host memory, whatever device trained it
    total = parameter_count(model)
    own = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) if base else total
    flops = flops_estimate(total, result.tokens)
    if teacher is not None:  # the teacher's forward pass: 2 x its parameters per token
        flops += 2.0 * parameter_count(teacher) * result.tokens
    with atomic_dir(gen.artifact) as tmp:
        if result.steps == 0:  # nothing trained: keep the bred files byte for byte
            for item in bred_dir.iterdir():
                shutil.copy2(item, tmp / item.name)
        elif base is not None:
            save_adapter(model, tokenizer, tmp)
        else:
            save_model(model, tokenizer, tmp)
        meta = {
            "studbook_format": 1, "name": gen.name, "kind": gen.kind, "method": bred["method"],
            "relation": gen.method.relation, "base_model_relation": gen.method.base_model_relation,
            "parents": bred["parents"], "seed": recipe.seed, "contract": gen.contract_name,
            "recipe": gen.resolved.resolved,
            "recipe_sha256": sha256_bytes(canonical_json(gen.resolved.resolved).encode()),
            "architecture": (model.get_base_model() if base else model).config.model_type,
            "parameters": own, "total_parameters": total,
            "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
            "data": corpus_record(gen, trained=result.steps > 0),
            "compute": {"steps": result.steps, "tokens": result.tokens, "flops": flops,
                        "capped_by_seconds": result.capped, "processes": launch.world_size()},
            "numerics": numerics.environment(),
            "weights_sha256": weights_sha256(tmp),
            "versions": library_versions(),
        }
        meta["breed"] = {"checked": bred["checked"], "facts": bred["facts"]}
        for key in ("base", "teacher"):
            if key in bred["facts"]:
                meta[key] = bred["facts"][key]
        if probe is not None:
            meta["compute"]["target"] = probe.record()
        write_meta(tmp, meta)
    wall_time = _record_wall_time(paths.compute, meta["weights_sha256"], {
        "seconds": round(result.seconds, 3), "tokens_per_second": round(result.tokens_per_second),
        "target_check_seconds": round(probe.seconds, 1) if probe else 0.0, "host": numerics.host()})
    scalar = {k: v for k, v in bred["facts"].items() if isinstance(v, (int, float, str, bool))}
    return {"generation": gen.name, "method": gen.method.name, "kind": gen.kind,
            "parents": len(gen.parents), **scalar, "steps": result.steps, "tokens": result.tokens,
            "processes": launch.world_size(),
            **({"tokens_per_process": ",".join(map(str, result.tokens_per_process))}
               if launch.world_size() > 1 else {}),
            "seconds": round(result.seconds, 1), "tokens_per_second": round(result.tokens_per_second),
            "final_loss_nats": round(result.final_loss, 4),
            "final_bits_per_byte": round(result.final_bits_per_byte, 4),
            "parameters": own, "numerics": meta["numerics"]["mode"], "wall_time": wall_time,
            "weights_sha256": meta["weights_sha256"],
            **({"target_reached": probe.reached_at is not None,
                "tokens_to_target": probe.reached_at["tokens"] if probe.reached_at else "not reached"}
               if probe else {})}
