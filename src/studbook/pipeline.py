"""The five stage bodies of a generation: breed, train, evaluate, gate, card.

Each stage script in `stages/` parses its argument and calls exactly one function
here. Every function validates first (nothing computed on bad input), writes its
outputs atomically, and returns the `key: value` summary the stage prints.
"""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import atomic_dir, canonical_json, sha256_bytes, write_json_atomic, write_text_atomic
from .generation import GenerationPaths, load_generation, parents_of


def _recipe_sha256(resolved) -> str:
    return sha256_bytes(canonical_json(resolved.resolved).encode())


def breed(name: str) -> dict:
    """Initial weights by the recipe's method, into generations/NAME/bred.

    The compatibility contract is checked first, from the parents' headers and
    metadata: a mismatch stops here, before any weight is computed or written.
    """
    from dataclasses import replace

    from . import methods
    from .artifacts import check_safe_folder
    from .compat import check_compatibility
    from .refs import BreedContext

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    method = methods.get(recipe.method, file=resolved.recipe_file)
    parents = parents_of(resolved)
    ctx = BreedContext(recipe=recipe, params=resolved.parameters, parents=parents, out_dir=paths.bred,
                       contract_name=resolved.contract_name, recipe_file=resolved.recipe_file)
    checked = check_compatibility(ctx, method, resolved.recipe_file)
    for parent in parents:
        check_safe_folder(parent.path)
    from .runtime import setup_torch

    setup_torch(recipe.seed)
    with atomic_dir(paths.bred) as tmp:
        facts = method.breed(replace(ctx, out_dir=tmp))
        (tmp / "breed.json").write_text(canonical_json(
            {"method": method.name, "kind": resolved.kind, "checked": checked, "facts": facts,
             "parents": [{"name": p.name, "kind": p.kind, "sha256": p.sha256} for p in parents]}),
            encoding="utf-8")
    scalar = {k: v for k, v in facts.items() if isinstance(v, (int, float, str, bool))}
    return {"generation": name, "method": method.name, "kind": resolved.kind,
            "parents": len(parents), **scalar}


def _training_sources(resolved, parents) -> list:
    """(token stream, fraction) sources: the corpus split, hard examples, replay."""
    from .errors import StudbookError
    from .evaluation import read_evaluation
    from .harvest import best_items, inherited
    from .training import texts_stream, token_stream

    recipe, data = resolved.recipe, resolved.recipe.data
    sources = [(token_stream(data.corpus, data.split, data.niches), 1.0 - data.hard_examples - data.replay)]
    harvest = recipe.contract.harvest
    if data.hard_examples:
        rows = inherited([GenerationPaths(p.name).hard_examples(resolved.contract_name) for p in parents])
        if not rows:
            raise StudbookError("data.hard_examples > 0 but the parents left no hard examples for "
                                f"contract '{resolved.contract_name}'", file=resolved.recipe_file,
                                key="data.hard_examples")
        sources.append((texts_stream([r["text"] for r in rows]), data.hard_examples))
    if data.replay:
        if not parents or harvest is None:
            raise StudbookError("data.replay needs parents and a contract with a harvest section",
                                file=resolved.recipe_file, key="data.replay")
        texts = []
        for parent in parents:
            evaluation = read_evaluation(parent.eval_dir)
            texts += best_items(evaluation["samples"], harvest.tasks, data.replay_items,
                                evaluation["results"])
        sources.append((texts_stream(texts), data.replay))
    return sources


def train(name: str) -> dict:
    """Train the bred weights within the recipe's budget, into models/NAME or adapters/NAME."""
    import shutil

    from dvclive import Live

    from . import methods
    from .artifacts import library_versions, load_artifact, load_model, parameter_count, \
        save_adapter, save_model, weights_sha256, write_meta
    from .data import read_manifest
    from .errors import StudbookError
    from .runtime import setup_torch
    from .tokenizer import build_tokenizer, load_tokenizer, tokenizer_fingerprint
    from .training import flops_estimate
    from .training import train as run_training

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    method = methods.get(recipe.method)
    parents = parents_of(resolved)
    bred = json.loads((paths.bred / "breed.json").read_text())
    setup_torch(recipe.seed)
    tokenizer = load_tokenizer(paths.bred)
    base = bred["facts"].get("base") if resolved.kind == "adapter" else None
    if base is not None:
        from peft import PeftModel

        if weights_sha256(base["path"]) != base["sha256"]:
            raise StudbookError(f"base '{base['name']}' changed since the adapter was bred",
                                file=str(paths.bred / "breed.json"), key="facts.base.sha256")
        model = PeftModel.from_pretrained(load_model(base["path"]), str(paths.bred), is_trainable=True)
    else:
        model = load_model(paths.bred)
    if recipe.train.steps and tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(
            build_tokenizer(recipe.model.context_length)):
        raise StudbookError("training reads the corpus as bytes, so it needs the byte tokenizer; "
                            "this artifact has another (set train steps to 0 to import as-is)",
                            file=resolved.group_files["train"], key="steps")
    teacher = load_artifact(parents[0].path) if method.teaches else None
    probe = None
    if recipe.train.target is not None:
        from .targets import TargetProbe, task_texts

        target = recipe.train.target
        probe = TargetProbe(target, task_texts(target.task, "tasks", target.items,
                                               where=resolved.group_files["train"]),
                            tokenizer, recipe.model.context_length,
                            batch_size=recipe.contract.evaluation.batch_size)
        probe.model = model
    with atomic_dir(paths.live) as live_dir:
        with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            if recipe.train.steps:
                sources = _training_sources(resolved, parents)
                result = run_training(model, sources, recipe.train, recipe.model.context_length,
                                      recipe.seed, live=live, teacher=teacher,
                                      distill=resolved.parameters if teacher is not None else None,
                                      should_stop=probe)
            else:
                from .training import TrainResult

                result = TrainResult(steps=0, tokens=0, seconds=0.0, final_loss=float("nan"), capped=False)
        # wall-clock figures live beside the training log, not in the artifact: re-running
        # the same recipe then gives a byte-identical artifact (and nothing downstream re-runs)
        (live_dir / "compute.json").write_text(canonical_json({
            "seconds": round(result.seconds, 3),
            "tokens_per_second": round(result.tokens_per_second),
            "target_check_seconds": round(probe.seconds, 1) if probe else 0.0}))
    manifest = read_manifest(recipe.data.corpus)
    total = parameter_count(model)
    own = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) if base else total
    flops = flops_estimate(total, result.tokens)
    if teacher is not None:  # the teacher's forward pass: 2 x its parameters per token
        flops += 2.0 * parameter_count(teacher) * result.tokens
    with atomic_dir(paths.artifact(resolved.kind)) as tmp:
        if result.steps == 0:  # nothing trained: keep the bred files byte for byte
            for item in paths.bred.iterdir():
                if item.name != "breed.json":
                    shutil.copy2(item, tmp / item.name)
        elif base is not None:
            save_adapter(model, tokenizer, tmp)
        else:
            save_model(model, tokenizer, tmp)
        meta = {
            "studbook_format": 1,
            "name": name,
            "kind": resolved.kind,
            "method": bred["method"],
            "relation": method.relation,
            "parents": bred["parents"],
            "seed": recipe.seed,
            "contract": resolved.contract_name,
            "recipe": resolved.resolved,
            "recipe_sha256": _recipe_sha256(resolved),
            "architecture": (model.get_base_model() if base else model).config.model_type,
            "parameters": own,
            "total_parameters": total,
            "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
            "data": {"source": manifest["source"], "python_version": manifest["python_version"],
                     "content_sha256": manifest["content_sha256"]},
            "compute": {
                "steps": result.steps, "tokens": result.tokens,
                "flops": flops,
                "capped_by_seconds": result.capped,
            },
            "weights_sha256": weights_sha256(tmp),
            "versions": library_versions(),
        }
        for key in ("base", "teacher"):
            if key in bred["facts"]:
                meta[key] = bred["facts"][key]
        if probe is not None:
            meta["compute"]["target"] = probe.record()
        write_meta(tmp, meta)
    final = result.final_loss
    return {"generation": name, "kind": resolved.kind, "steps": result.steps, "tokens": result.tokens,
            "seconds": round(result.seconds, 1), "tokens_per_second": round(result.tokens_per_second),
            "final_loss_nats": round(final, 4),
            "final_bits_per_byte": round(final / 0.6931471805599453, 4),
            "parameters": own, "weights_sha256": meta["weights_sha256"],
            **({"target_reached": probe.reached_at is not None,
                "tokens_to_target": probe.reached_at["tokens"] if probe.reached_at else "not reached"}
               if probe else {})}


def evaluate(name: str) -> dict:
    """Score the artifact on the contract's lm-eval tasks (and mining tasks), into generations/NAME/eval."""
    from .evaluation import evaluate_model, write_evaluation
    from .runtime import setup_torch

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    contract = recipe.contract
    tasks = [b.task for b in contract.benchmarks]
    tasks += contract.harvest.tasks if contract.harvest else []
    setup_torch(contract.evaluation.seed)
    evaluation = evaluate_model(paths.artifact(resolved.kind), tasks, "tasks", contract.evaluation,
                                recipe.model.context_length)
    write_evaluation(evaluation, paths.eval)
    metrics = {b.task: round(evaluation["results"][b.task]["metrics"][b.metric], 6)
               for b in contract.benchmarks}
    write_json_atomic(paths.metrics, metrics)
    return {"generation": name, **metrics}


def gate(name: str) -> dict:
    """Paired-bootstrap verdict against the best parent, into generations/NAME/verdict.json."""
    from .artifacts import read_meta
    from .evaluation import read_evaluation
    from .gate import decide, scores_from_samples

    resolved = load_generation(name)
    paths = GenerationPaths(name)
    child_meta = read_meta(paths.artifact(resolved.kind))
    child = scores_from_samples(name, child_meta["weights_sha256"],
                                read_evaluation(paths.eval)["samples"])
    parents = [scores_from_samples(p.name, p.sha256, read_evaluation(p.eval_dir)["samples"])
               for p in parents_of(resolved)]
    verdict = decide(child, parents, resolved.recipe.contract)
    write_json_atomic(paths.verdict, verdict)
    net = verdict["primary"]["net_gain"]
    return {"generation": name, "verdict": verdict["verdict"],
            "reference_parent": verdict["reference_parent"],
            "net_gain": round(net["mean"], 4), "net_gain_ci_low": round(net["ci_low"], 4),
            "net_gain_ci_high": round(net["ci_high"], 4), "p_value": round(net["p_value"], 4)}


def harvest(name: str) -> dict:
    """Hard examples from the mining split into hard_examples/CONTRACT/NAME.{jsonl,yaml}."""
    from .artifacts import read_meta
    from .errors import StudbookError
    from .evaluation import read_evaluation
    from .harvest import harvest as collect
    from .harvest import write_hard_examples

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    spec = recipe.contract.harvest
    if spec is None:
        raise StudbookError("the contract has no harvest section", file=resolved.group_files["contract"])
    contract = resolved.contract_name
    evaluation = read_evaluation(paths.eval)
    child = {"sha256": read_meta(paths.artifact(resolved.kind))["weights_sha256"],
             "samples": evaluation["samples"]}
    parents = parents_of(resolved)
    parent_scores = {p.name: {"sha256": p.sha256, "samples": read_evaluation(p.eval_dir)["samples"]}
                     for p in parents}
    parent_files = [GenerationPaths(p.name).hard_examples(contract) for p in parents]
    rows = collect(name, contract, child, parent_scores, evaluation["results"], spec.tasks,
                   spec.per_task, parent_files)
    write_hard_examples(rows, paths.hard_examples(contract), paths.hard_examples_task(contract),
                        contract, name)
    new = sum(1 for r in rows if r["provenance"]["generation"] == name)
    return {"generation": name, "hard_examples": len(rows), "new": new,
            "inherited": len(rows) - new, "file": str(paths.hard_examples(contract))}


def _with_wall_time(meta: dict, live_dir: Path) -> dict:
    """The artifact's metadata plus the training's wall time, kept beside the training log."""
    wall = live_dir / "compute.json"
    if wall.is_file():  # artifacts bred before wall time moved out of them carry their own
        meta = {**meta, "compute": {**meta["compute"], "seconds": json.loads(wall.read_text())["seconds"]}}
    return meta


def card(name: str) -> dict:
    """Render cards/NAME.md and its JSON twin (card last)."""
    from . import methods
    from .artifacts import read_meta
    from .cards import card_context, compounding, render_card
    from .data import read_manifest
    from .evaluation import read_evaluation
    from .harvest import inherited, read_hard_examples, retention

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    contract = resolved.contract_name
    evaluation = read_evaluation(paths.eval)
    verdict = json.loads(paths.verdict.read_text())
    parents = parents_of(resolved)
    evidence: dict = {"relation": methods.get(recipe.method).relation}
    if recipe.contract.harvest is not None:
        own = read_hard_examples(paths.hard_examples(contract))
        evidence["hard_examples"] = {
            "file": str(paths.hard_examples(contract)), "total": len(own),
            "new": sum(1 for r in own if r["provenance"]["generation"] == name)}
        kept = inherited([GenerationPaths(p.name).hard_examples(contract) for p in parents])
        if kept:
            evidence["retention"] = {
                "items": len(kept),
                "child": retention(kept, evaluation["samples"]),
                "parents": {p.name: retention(kept, read_evaluation(p.eval_dir)["samples"])
                            for p in parents}}
    meta = _with_wall_time(read_meta(paths.artifact(resolved.kind)), paths.live)
    if recipe.compounding is not None:
        reference = GenerationPaths(recipe.compounding.scratch)
        evidence["compounding"] = compounding(
            meta["compute"], recipe.compounding.scratch,
            _with_wall_time(read_meta(reference.artifact("model")), reference.live)["compute"])
    context = card_context(
        meta=meta,
        results=evaluation["results"],
        verdict=verdict,
        contract=recipe.contract,
        manifest=read_manifest(recipe.data.corpus),
        relation=methods.get(recipe.method).base_model_relation,
        evidence=evidence,
    )
    text = render_card(context)
    write_json_atomic(paths.card_json, context)
    write_text_atomic(paths.card, text)  # card last
    return {"generation": name, "card": str(paths.card), "verdict": context["verdict"],
            "card_sha256": sha256_bytes(text.encode())}
