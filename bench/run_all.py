"""Run every benchmark and write one Markdown table (bench/RESULTS.md by default).

Each benchmark runs in its own process and reports JSON; this script only collects the
figures, compares each with its target and writes the table with the machine it ran on.
Benchmarks print ratios measured in one run: the machine is shared and noisy.

    python bench/run_all.py [--only train,numerics,merge,eval,pipeline,lineage,evolve] [--out bench/RESULTS.md] [--fresh]

With --only, the other benchmarks' figures of the last run (bench/RESULTS.json) are kept.

The whole run takes about half an hour on 2 cores (the pipeline part breeds a founder,
a from-scratch reference and a child with `dvc repro`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "train": ["train_throughput.py"],
    "numerics": ["numerics_cost.py"],
    "merge": ["merge_vs_mergekit.py"],
    "eval": ["eval_overhead.py"],
    "pipeline": ["pipeline.py"],
    "lineage": ["lineage_scale.py"],
    "evolve": ["evolve_throughput.py", "--run"],
}


def run(name: str, scratch: Path) -> dict:
    out = scratch / f"{name}.json"
    script, *extra = BENCHES[name]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1")
    start = time.perf_counter()
    print(f"== {name} ({script})", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(HERE / script), *extra, "--json", str(out)], check=True,
                   cwd=HERE.parent, env=env, stdout=sys.stderr)
    print(f"== {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return json.loads(out.read_text())


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("✔ met" if ok else "✘ missed")


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def table(results: dict) -> list[tuple[str, str, str, str, str, str]]:
    rows = []
    if "train" in results:
        t = results["train"]
        rows += [
            ("training", "tokens/s at the founder size (3.2 M params, batch 8 × 512)",
             f"{t['studbook_tokens_per_second']:,.0f}", f"{t['plain_tokens_per_second']:,.0f} (plain HF loop)",
             f"{t['studbook_vs_plain']:.2f}×", "—"),
            ("training", "share of the fp32 matmul peak (model FLOPs)",
             f"{100 * t['studbook_share_of_peak']:.1f} %", f"{100 * t['plain_share_of_peak']:.1f} % (plain HF loop)",
             f"peak {t['matmul_peak_gflops']:.0f} GFLOP/s", verdict(t["studbook_share_of_peak"] >= 0.55) + " (≥ 55 %)"),
            ("training", "bf16-mixed + compile (`founder_fast.yaml`): tokens/s, share of the fp32 peak",
             f"{t['fast_tokens_per_second']:,.0f} ({100 * t['fast_share_of_peak']:.1f} %)",
             f"{t['plain_tokens_per_second']:,.0f} (plain HF loop)",
             f"{t['fast_vs_plain']:.2f}× (bf16 matmul peak {t['bf16_matmul_peak_gflops']:.0f} GFLOP/s)", "—"),
        ]
        if "subword_studbook_vs_plain" in t:
            rows += [("training", f"tokens/s with a subword tokenizer (Qwen2, BPE vocabulary "
                      f"{t['subword_vocabulary']:,}, {t['subword_bytes_per_token']:.2f} bytes/token, "
                      f"{t['subword_parameters'] / 1e6:.1f} M params, batch 8 × 512)",
                      f"{t['subword_studbook_tokens_per_second']:,.0f}",
                      f"{t['subword_plain_tokens_per_second']:,.0f} (plain HF loop)",
                      f"{t['subword_studbook_vs_plain']:.2f}× (packing {t['subword_packing_tokens_per_second']:,.0f} tok/s)",
                      verdict(t["subword_studbook_vs_plain"] >= 0.95) + " (≥ 0.95×)")]
    if "numerics" in results:
        n = results["numerics"]
        rows += [("numerics", "pin's speed cost: studbook training at the founder size, tokens/s",
                  f"{n['pinned_tokens_per_second']:,.0f} (pinned: {n['pinned_cpu_capability']}, "
                  f"MKL {n['pinned_mkl_cbwr']}, {n['threads']} threads)",
                  f"{n['fast_tokens_per_second']:,.0f} (fast: {n['fast_cpu_capability']})",
                  f"{n['pinned_vs_fast']:.2f}×", "—")]
    if "merge" in results:
        m = results["merge"]
        size = m["model_bytes"]
        methods = sorted(k for k, v in m.items() if isinstance(v, dict) and "speedup" in v)
        for method in methods:  # every method's recipe row (tests/merge_recipes/METHOD.yaml)
            r = m[method]
            rows += [
                (f"merge {method}", f"wall time, its recipe row on {m['parameters'] / 1e6:.0f} M-param Llamas; "
                 f"tensors identical to mergekit's: {'yes' if r['identical'] else 'NO'} ({r['tensors']})",
                 f"{r['studbook_seconds']:.1f} s", f"{r['mergekit_seconds']:.1f} s (mergekit)",
                 f"{r['speedup']:.2f}× faster", verdict(r["speedup"] >= 2 and r["identical"]) + " (≥ 2×, identical)"),
                (f"merge {method}", f"peak RSS vs one model + output ({mib(2 * size)})",
                 f"{mib(r['studbook_peak_rss'])}", f"{mib(r['mergekit_peak_rss'])} (mergekit)",
                 f"{r['studbook_peak_vs_model_plus_output']:.2f}× (mergekit {r['mergekit_peak_vs_model_plus_output']:.2f}×)",
                 verdict(r["studbook_peak_vs_model_plus_output"] <= 1.3) + " (≤ 1.3×)"),
            ]
    if "eval" in results:
        e = results["eval"]
        rows += [
            ("evaluation", f"lm-eval path vs raw batched forward, {e['documents']} documents",
             f"{e['lm_eval_seconds']:.1f} s", f"{e['raw_seconds']:.1f} s (raw forward)",
             f"{e['overhead']:.2f}×", verdict(e["overhead"] <= 1.3) + " (≤ 1.3×)"),
            ("evaluation", "same numbers: pooled bits/byte",
             f"{e['lm_eval_bits_per_byte']:.4f}", f"{e['raw_bits_per_byte']:.4f}",
             f"{100 * e['relative_difference']:.3f} % apart", verdict(e["relative_difference"] <= 0.005)),
        ]
    if "pipeline" in results and "compounding" not in results["pipeline"]:  # --from: the no-op only
        p = results["pipeline"]
        rows += [("pipeline", f"`dvc repro -P` no-op, {p['generations']} generations ({p['stages']} stages, "
                  f"{p['deps_per_generation']:.0f} deps + params each)",
                  f"{p['noop_seconds']:.1f} s", f"{p['floor_seconds']:.1f} s (DVC floor: 2 trivial stages each)",
                  f"{p['noop_vs_floor']:.2f}×", verdict(p["noop_vs_floor"] <= 2.0) + " (≤ 2×)")]
    elif "pipeline" in results:
        p = results["pipeline"]
        c = p["compounding"]
        rows += [
            ("pipeline", "founder generation, `dvc repro` (data stages apart)", f"{p['founder_seconds']:.0f} s",
             f"data stages {p['data_seconds']:.0f} s", "—", "—"),
            ("pipeline", "child generation (full fine-tune to target), `dvc repro`", f"{p['child_seconds']:.0f} s",
             f"{p['child_stages_run']} stages ran", "—", "—"),
            ("pipeline", "parent stages re-run while the child was bred", f"{p['parent_stages_rerun']}", "0",
             "—", verdict(p["parent_stages_rerun"] == 0)),
            ("pipeline", f"`dvc repro -P` no-op, {p['generations']} generations ({p['stages']} stages)",
             f"{p['noop_seconds']:.1f} s", f"{p['floor_seconds']:.1f} s (DVC floor: 2 trivial stages each)",
             f"{p['noop_vs_floor']:.2f}×", verdict(p["noop_vs_floor"] <= 2.0) + " (≤ 2×)"),
            ("compounding", f"tokens to {c['target']['bits_per_byte']:.2f} bits/byte on `{c['target']['task']}`",
             f"{c['child']['tokens']:,} (child)" if c["child"]["reached"] else "not reached",
             f"{c['scratch']['tokens']:,} (from scratch{'' if c['scratch']['reached'] else ', not reached'})",
             "—" if c["token_ratio"] is None else
             f"{'≤ ' if c['bound'] == 'at most' else ''}{100 * c['token_ratio']:.1f} %",
             "—" if c["token_ratio"] is None else verdict(c["token_ratio"] <= 0.10) + " (≤ 10 %)"),
            ("compounding", "wall time to target",
             f"{c['child']['seconds']:.0f} s (child)", f"{c['scratch']['seconds']:.0f} s (from scratch)",
             "—" if c["seconds_ratio"] is None else f"{100 * c['seconds_ratio']:.1f} %", "—"),
        ]
    if "lineage" in results:
        g = results["lineage"]
        rows += [("lineage", f"`studbook lineage`, {g['generations']:,} generations (whole command)",
                  f"{g['command_seconds']:.2f} s", f"{g['baseline_seconds']:.3f} s (parsing the cards alone)",
                  "—", verdict(g["command_seconds"] <= 1.0) + " (≤ 1 s)")]
    for name in (results.get("evolve") or {}).get("searches", []):
        e = {k[len(name) + 1:]: v for k, v in results["evolve"].items() if k.startswith(name + "_")}
        noise = " (noise run reused)" if e["noise_reused"] else ""
        rows += [
            ("evolve", f"search `{name}`: candidates per hour, 2 workers ({e['candidates']} candidates, "
             f"{e['promoted']} promoted)", f"{e['candidates_per_hour']:.1f}", "—", "—", "—"),
            ("evolve", "not-training share of a candidate's wall time (median)",
             f"{100 * e['not_training_share']:.1f} %",
             f"{e['train_seconds_median']:.1f} s training of {e['wall_seconds_median']:.1f} s wall",
             f"15 % needs ≈ {e['train_for_15_percent']:.0f} s training",
             verdict(e["not_training_share"] <= 0.15) + " (≤ 15 % at 60 s training)"),
            ("evolve", f"compute per promoted generation{noise}",
             "—" if e["worker_seconds_per_promoted"] is None else f"{e['worker_seconds_per_promoted']:,.0f} worker-s",
             "—" if e["training_flops_per_promoted"] is None else f"{e['training_flops_per_promoted']:.3g} FLOPs",
             "—", "—"),
        ]
        if "profile_wall_seconds" in e:
            rows.append(("evolve", "wall time, median parts: DVC / imports / training / evaluation / other",
                         " / ".join(f"{e[f'profile_{k}_seconds']:.1f}" for k in ("dvc", "imports", "train",
                                                                                 "evaluate", "other")) + " s",
                         f"{e['profile_wall_seconds']:.1f} s wall", "—", "—"))
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                            capture_output=True, text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"commit `{commit}`, {datetime.date.today().isoformat()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(BENCHES),
                        help="comma-separated: " + ", ".join(BENCHES) + " (empty: only re-render the table)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"),
                        help="the Markdown table; the raw figures go beside it (.json)")
    parser.add_argument("--fresh", action="store_true", help="forget figures of earlier runs")
    parser.add_argument("--pipeline-from", help="time the pipeline's no-op on a copy of this bred "
                        "repository instead of breeding one (bench/pipeline.py --from)")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    if args.pipeline_from:
        BENCHES["pipeline"] = ["pipeline.py", "--from", str(Path(args.pipeline_from).resolve())]
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}")
    raw = Path(args.out).with_suffix(".json")
    # a partial run (--only) keeps the other benchmarks' last figures, so one table holds all
    results = json.loads(raw.read_text()) if raw.is_file() and not args.fresh else {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in chosen:
            results[name] = run(name, Path(scratch))
            raw.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    results = {name: results[name] for name in BENCHES if name in results}
    lines = ["# studbook benchmarks", "", f"Machine: {machine()}.", ""]
    if "train" in results:
        lines += [f"Measured fp32 matmul peak: **{results['train']['matmul_peak_gflops']:.0f} GFLOP/s**.", ""]
    lines += ["| area | measure | studbook | baseline / peer | ratio | target |",
              "|---|---|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table(results)]
    if "pipeline" in results and "child_card_line" in results["pipeline"]:
        lines += ["", "On the child's card:", "", "> " + results["pipeline"]["child_card_line"]]
    lines += ["", f"Raw figures: `{raw.name}` beside this file.", ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
