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


def _context(gen: Generation, out_dir: Path):
    from studbook.repository.refs import BreedContext

    return BreedContext(recipe=gen.recipe, params=gen.resolved.parameters, parents=gen.parents,
                        out_dir=out_dir, contract_name=gen.contract_name,
                        recipe_file=gen.resolved.recipe_file)


def check(gen: Generation) -> dict:
    """The compatibility contract, from the parents' headers: before anything is written."""
    from studbook.operators.artifacts import check_safe_folder
    from studbook.operators.compat import check_compatibility

    checked = check_compatibility(_context(gen, gen.paths.folder), gen.method, gen.resolved.recipe_file)
    for parent in gen.parents:
        check_safe_folder(parent.path)
    return checked


def make_initial(gen: Generation, out_dir: Path, checked: dict | None = None) -> dict:
    """Initial weights by the recipe's method into `out_dir`; returns the breed record."""
    from studbook.core.numerics import configure_torch

    checked = check(gen) if checked is None else checked
    configure_torch(gen.recipe.seed)
    facts = gen.method.breed(_context(gen, out_dir))
    return {"method": gen.method.name, "kind": gen.kind, "checked": checked, "facts": facts,
            "parents": [{"name": p.name, "kind": p.kind, "sha256": p.sha256} for p in gen.parents]}


def training_sources(gen: Generation) -> list:
    """(token stream, fraction) sources: the corpus split, hard examples, replay."""
    from studbook.core.errors import StudbookError
    from studbook.evidence.records import read_evaluation
    from studbook.evidence.harvest import best_items, inherited
    from studbook.operators.training import texts_stream, token_stream

    data, harvest = gen.recipe.data, gen.recipe.contract.harvest
    sources = [(token_stream(data.corpus, data.split, data.niches), 1.0 - data.hard_examples - data.replay)]
    if data.hard_examples:
        rows = inherited([GenerationPaths(p.name).hard_examples(gen.contract_name) for p in gen.parents])
        if not rows:
            raise StudbookError("data.hard_examples > 0 but the parents left no hard examples for "
                                f"contract '{gen.contract_name}'", file=gen.resolved.recipe_file,
                                key="data.hard_examples")
        sources.append((texts_stream([r["text"] for r in rows]), data.hard_examples))
    if data.replay:
        if not gen.parents or harvest is None:
            raise StudbookError("data.replay needs parents and a contract with a harvest section",
                                file=gen.resolved.recipe_file, key="data.replay")
        texts = []
        for parent in gen.parents:
            evaluation = read_evaluation(parent.eval_dir)
            texts += best_items(evaluation["samples"], harvest.tasks, data.replay_items,
                                evaluation["results"])
        sources.append((texts_stream(texts), data.replay))
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


def run(gen: Generation) -> dict:
    """Breed and train generations/NAME into its artifact; returns the stage summary."""
    from studbook.core.atomic import scratch_dir

    checked = check(gen)  # nothing is written on a mismatch
    with scratch_dir(gen.paths.folder / "bred") as bred_dir:  # initial weights: never an output
        bred = make_initial(gen, bred_dir, checked)
        return _train(gen, bred_dir, bred)


def _train(gen: Generation, bred_dir: Path, bred: dict) -> dict:
    from dvclive import Live

    from studbook.core import numerics
    from studbook.core.errors import StudbookError
    from studbook.evidence.data import read_manifest
    from studbook.operators.artifacts import library_versions, load_artifact, parameter_count, \
        save_adapter, save_model, weights_sha256, write_meta
    from studbook.operators.tokenizer import build_tokenizer, load_tokenizer, tokenizer_fingerprint
    from studbook.operators.training import TrainResult, flops_estimate
    from studbook.operators.training import train as run_training

    recipe, paths = gen.recipe, gen.paths
    numerics.configure_torch(recipe.seed)
    tokenizer = load_tokenizer(bred_dir)
    model, base = _load_trainable(gen, bred_dir, bred)
    if recipe.train.steps and tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(
            build_tokenizer(recipe.model.context_length)):
        raise StudbookError("training reads the corpus as bytes, so it needs the byte tokenizer; "
                            "this artifact has another (set train steps to 0 to import as-is)",
                            file=gen.file("train"), key="steps")
    teacher = load_artifact(gen.parents[0].path) if gen.method.teaches else None
    probe = None
    if recipe.train.target is not None:
        from studbook.operators.targets import TargetProbe, task_texts

        target = recipe.train.target
        probe = TargetProbe(target, task_texts(target.task, "tasks", target.items, where=gen.file("train")),
                            tokenizer, recipe.model.context_length,
                            batch_size=recipe.contract.evaluation.batch_size)
        probe.model = model
    with atomic_dir(paths.live) as live_dir:
        with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            if recipe.train.steps:
                result = run_training(model, training_sources(gen), recipe.train, recipe.model.context_length,
                                      recipe.seed, live=live, teacher=teacher,
                                      distill=gen.resolved.parameters if teacher is not None else None,
                                      should_stop=probe)
            else:
                result = TrainResult(steps=0, tokens=0, seconds=0.0, final_loss=float("nan"), capped=False)
    manifest = read_manifest(recipe.data.corpus)
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
            "data": {"source": manifest["source"], "python_version": manifest["python_version"],
                     "content_sha256": manifest["content_sha256"]},
            "compute": {"steps": result.steps, "tokens": result.tokens, "flops": flops,
                        "capped_by_seconds": result.capped},
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
    final = result.final_loss
    scalar = {k: v for k, v in bred["facts"].items() if isinstance(v, (int, float, str, bool))}
    return {"generation": gen.name, "method": gen.method.name, "kind": gen.kind,
            "parents": len(gen.parents), **scalar, "steps": result.steps, "tokens": result.tokens,
            "seconds": round(result.seconds, 1), "tokens_per_second": round(result.tokens_per_second),
            "final_loss_nats": round(final, 4), "final_bits_per_byte": round(final / 0.6931471805599453, 4),
            "parameters": own, "numerics": meta["numerics"]["mode"], "wall_time": wall_time,
            "weights_sha256": meta["weights_sha256"],
            **({"target_reached": probe.reached_at is not None,
                "tokens_to_target": probe.reached_at["tokens"] if probe.reached_at else "not reached"}
               if probe else {})}
