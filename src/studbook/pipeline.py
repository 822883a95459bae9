"""The five stage bodies of a generation: breed, train, evaluate, gate, card.

Each stage script in `stages/` parses its argument and calls exactly one function
here. Every function validates first (nothing computed on bad input), writes its
outputs atomically, and returns the `key: value` summary the stage prints.
"""

from __future__ import annotations

import json

from .atomic import atomic_dir, canonical_json, sha256_bytes, write_json_atomic, write_text_atomic
from .generation import GenerationPaths, load_generation


def _recipe_sha256(resolved) -> str:
    return sha256_bytes(canonical_json(resolved.resolved).encode())


def breed(name: str) -> dict:
    """Initial weights by the recipe's method, into generations/NAME/bred."""
    from . import methods
    from .artifacts import check_safe_folder, weights_sha256

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    method = methods.get(recipe.method, file=resolved.recipe_file)
    parent_dirs = [GenerationPaths(p).model for p in recipe.parents]
    parents = []
    for parent, folder in zip(recipe.parents, parent_dirs):
        check_safe_folder(folder)
        parents.append({"name": parent, "sha256": weights_sha256(folder)})
    from .runtime import setup_torch

    setup_torch(recipe.seed)
    with atomic_dir(paths.bred) as tmp:
        facts = method.breed(recipe, parent_dirs, tmp)
        (tmp / "breed.json").write_text(canonical_json(
            {"method": method.name, "parents": parents, "facts": facts}), encoding="utf-8")
    return {"generation": name, "method": method.name, "parents": len(parents), **facts}


def train(name: str) -> dict:
    """Train the bred weights within the recipe's budget, into models/NAME."""
    from dvclive import Live

    from .artifacts import library_versions, load_model, parameter_count, save_model, \
        weights_sha256, write_meta
    from .data import read_manifest
    from .runtime import setup_torch
    from .tokenizer import load_tokenizer, tokenizer_fingerprint
    from .training import flops_estimate, token_stream
    from .training import train as run_training

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    bred = json.loads((paths.bred / "breed.json").read_text())
    setup_torch(recipe.seed)
    model = load_model(paths.bred)
    tokenizer = load_tokenizer(paths.bred)
    stream = token_stream(recipe.data.corpus, recipe.data.split, recipe.data.niches)
    with atomic_dir(paths.live) as live_dir:
        with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
            result = run_training(model, stream, recipe.train, recipe.model.context_length,
                                  recipe.seed, live=live)
    manifest = read_manifest(recipe.data.corpus)
    parameters = parameter_count(model)
    with atomic_dir(paths.model) as tmp:
        save_model(model, tokenizer, tmp)
        meta = {
            "studbook_format": 1,
            "name": name,
            "kind": "model",
            "method": bred["method"],
            "parents": bred["parents"],
            "seed": recipe.seed,
            "contract": resolved.contract_name,
            "recipe": resolved.resolved,
            "recipe_sha256": _recipe_sha256(resolved),
            "architecture": recipe.model.architecture,
            "parameters": parameters,
            "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
            "data": {"source": manifest["source"], "python_version": manifest["python_version"],
                     "content_sha256": manifest["content_sha256"]},
            "compute": {
                "steps": result.steps, "tokens": result.tokens,
                "seconds": round(result.seconds, 1),
                "flops": flops_estimate(parameters, result.tokens),
                "capped_by_seconds": result.capped,
            },
            "weights_sha256": weights_sha256(tmp),
            "versions": library_versions(),
        }
        write_meta(tmp, meta)
    return {"generation": name, "steps": result.steps, "tokens": result.tokens,
            "seconds": round(result.seconds, 1), "tokens_per_second": round(result.tokens_per_second),
            "final_loss_nats": round(result.final_loss, 4),
            "final_bits_per_byte": round(result.final_loss / 0.6931471805599453, 4),
            "parameters": parameters, "weights_sha256": meta["weights_sha256"]}


def evaluate(name: str) -> dict:
    """Score models/NAME on the contract's lm-eval tasks, into generations/NAME/eval."""
    from .evaluation import evaluate_model, write_evaluation
    from .runtime import setup_torch

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    contract = recipe.contract
    tasks = [b.task for b in contract.benchmarks]
    setup_torch(contract.evaluation.seed)
    evaluation = evaluate_model(paths.model, tasks, "tasks", contract.evaluation,
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
    recipe, paths = resolved.recipe, GenerationPaths(name)
    child_meta = read_meta(paths.model)
    child = scores_from_samples(name, child_meta["weights_sha256"],
                                read_evaluation(paths.eval)["samples"])
    parents = []
    for parent in recipe.parents:
        parent_paths = GenerationPaths(parent)
        parents.append(scores_from_samples(parent, read_meta(parent_paths.model)["weights_sha256"],
                                           read_evaluation(parent_paths.eval)["samples"]))
    verdict = decide(child, parents, recipe.contract)
    write_json_atomic(paths.verdict, verdict)
    net = verdict["primary"]["net_gain"]
    return {"generation": name, "verdict": verdict["verdict"],
            "reference_parent": verdict["reference_parent"],
            "net_gain": round(net["mean"], 4), "net_gain_ci_low": round(net["ci_low"], 4),
            "net_gain_ci_high": round(net["ci_high"], 4), "p_value": round(net["p_value"], 4)}


def card(name: str) -> dict:
    """Render cards/NAME.md and its JSON twin (card last)."""
    from .artifacts import read_meta
    from .cards import card_context, render_card
    from .data import read_manifest
    from .evaluation import read_evaluation

    resolved = load_generation(name)
    recipe, paths = resolved.recipe, GenerationPaths(name)
    evaluation = read_evaluation(paths.eval, samples=False)
    verdict = json.loads(paths.verdict.read_text())
    context = card_context(
        meta=read_meta(paths.model),
        results=evaluation["results"],
        verdict=verdict,
        contract=recipe.contract,
        manifest=read_manifest(recipe.data.corpus),
        relation=_relation(recipe.method),
    )
    text = render_card(context)
    write_json_atomic(paths.card_json, context)
    write_text_atomic(paths.card, text)  # card last
    return {"generation": name, "card": str(paths.card), "verdict": context["verdict"],
            "card_sha256": sha256_bytes(text.encode())}


def _relation(method_name: str) -> str | None:
    from . import methods

    return methods.get(method_name).base_model_relation
