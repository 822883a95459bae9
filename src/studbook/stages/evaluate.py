"""Stage evaluate: the artifact scored by lm-eval on the contract's tasks (and mining tasks).

The evaluation is the frozen ground truth: local task YAMLs under the contract's task
folders, every seed and the batch size pinned, per-item scores kept in
`generations/NAME/eval` for the gate's paired statistics; the contract's headline figures
go to `metrics.json` for `dvc metrics`. The terminal gets one progress bar (a few lines in
a pipe); lm-eval's logs and warnings go in full to `.dvc/tmp/logs/NAME/evaluate.log`
(on the terminal too with STUDBOOK_VERBOSE=1).
"""

from __future__ import annotations

from studbook.core.atomic import write_json_atomic
from studbook.repository.generation import Generation

LAUNCHABLE = True  # data-parallel under STUDBOOK_LAUNCHER (`accelerate launch …`)


def run(gen: Generation) -> dict | None:
    from studbook.core.numerics import configure_torch
    from studbook.core.quiet import library_output, log_file
    from studbook.evidence.evaluation import evaluate_model
    from studbook.evidence.records import write_evaluation
    from studbook.evidence.selection import chooser, evaluated_tasks, in_scope, read_scope

    from studbook.core import launch

    launch.check_device()
    contract = gen.recipe.contract
    scope = read_scope(gen.name)  # a search's candidate: its selection items only
    tasks = evaluated_tasks(contract, scope)
    configure_torch(contract.evaluation.seed)
    log = log_file(gen.name, "evaluate")
    with library_output(log) as logged:
        evaluation = evaluate_model(gen.artifact, tasks, contract.task_folders, contract.evaluation,
                                    gen.recipe.model.context_length, keep=chooser(scope))
    if evaluation is None:  # not the main process of a launch: it writes nothing
        return None
    write_evaluation(evaluation, gen.paths.eval)
    contract = in_scope(contract, scope)
    metrics = {b.task: round(evaluation["results"][b.task]["metrics"][b.metric], 6)
               for b in contract.benchmarks}
    write_json_atomic(gen.paths.metrics, metrics)
    return {"generation": gen.name, **metrics, "log": f"{log} ({logged.warnings} warnings)"}
