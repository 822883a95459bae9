"""studbook vs mergekit on the same mergekit YAML and files, at >= 100 M parameters.

Builds four Llama checkpoints locally with random weights (a base and three children that
differ from it by small random task vectors, the third on half the entries; nothing is
downloaded), then runs every merge method's recipe row (tests/merge_recipes/METHOD.yaml,
the same YAML the parity tests run) through `studbook merge` and through mergekit (its
`run_merge`, as `mergekit-yaml` calls it, with the same --random-seed), each in a fresh
process, and reports wall time, peak RSS (the kernel's maximum resident set of that
process, from wait4) and whether every output tensor is identical.

    python bench/merge_vs_mergekit.py [--hidden 768 --layers 12] [--methods ties,linear] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MERGEKIT = """
import sys, yaml
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
config = MergeConfiguration.model_validate(yaml.safe_load(open(sys.argv[1])))
run_merge(config, sys.argv[2], MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True,
                                            random_seed=SEED))
""".replace("SEED", "7")
SEED = 7
RECIPES = Path(__file__).resolve().parent.parent / "tests" / "merge_recipes"
MODELS = ("base", "a", "b", "c")


def recipes(only: list[str] | None) -> dict[str, str]:
    """method -> its recipe row's YAML, for every registered method (or `only`)."""
    from studbook.operators import merges

    names = only or merges.known()
    return {name: (RECIPES / f"{name}.yaml").read_text() for name in names}


def localised(text: str, folders: dict[str, Path]) -> str:
    for name, folder in folders.items():  # model names -> local folders, as mergekit reads them
        text = text.replace(f"model: {name}\n", f"model: {folder}\n").replace(f"base_model: {name}\n",
                                                                              f"base_model: {folder}\n")
    return text


def measured(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one process.

    Linux carries the parent's resident size into a child's ru_maxrss across fork and
    exec, so this must be called from a small process: the checkpoints are built in a
    child process and the tensors compared only after every measurement.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1")
    start = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{process.stderr.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024


def build_family(root: Path, hidden: int, layers: int) -> tuple[dict[str, Path], int, int]:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=hidden // 64, vocab_size=32000,
                         tie_word_embeddings=False, max_position_embeddings=2048,
                         architectures=["LlamaForCausalLM"])  # mergekit reads the architecture from here
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).state_dict()
    folders, size = {}, 0
    for index, name in enumerate(MODELS):
        generator = torch.Generator().manual_seed(100 + index)
        tensors = {}
        for key, value in base.items():
            delta = 0.02 * torch.randn(value.shape, generator=generator)
            if name == "c":
                delta *= torch.rand(value.shape, generator=generator) < 0.5
            tensors[key] = (value if name == "base" else value + delta).contiguous()
            del delta
        folder = root / name
        folder.mkdir()
        config.save_pretrained(folder)
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        folders[name] = folder
        size = (folder / "model.safetensors").stat().st_size
        del tensors
    parameters = sum(v.numel() for v in base.values())
    return folders, parameters, size


def identical(ours: Path, theirs: Path) -> tuple[bool, int]:
    """Every tensor equal, with the same dtype (run in a child process, see `measured`)."""
    import torch
    from safetensors import safe_open

    files = sorted(theirs.glob("*.safetensors"))
    with safe_open(str(ours / "model.safetensors"), "pt") as mine:
        names = set(mine.keys())
        seen = 0
        for file in files:
            with safe_open(str(file), "pt") as other:
                for name in other.keys():
                    seen += 1
                    a, b = (mine.get_tensor(name) if name in names else None), other.get_tensor(name)
                    if a is None or a.dtype != b.dtype or not torch.equal(a, b):
                        return False, seen
    return seen == len(names), seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--methods", help="comma-separated methods (default: every registered one)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--build", help=argparse.SUPPRESS)  # internal: build the checkpoints here
    parser.add_argument("--compare", nargs=2, help=argparse.SUPPRESS)  # internal: OURS THEIRS
    args = parser.parse_args()
    if args.build:
        _, parameters, size = build_family(Path(args.build), args.hidden, args.layers)
        print(json.dumps({"parameters": parameters, "model_bytes": size}))
        return
    if args.compare:
        same, tensors = identical(Path(args.compare[0]), Path(args.compare[1]))
        print(json.dumps({"identical": same, "tensors": tensors}))
        return
    results = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("STUDBOOK_BENCH_TMP")) as scratch:
        root = Path(scratch)
        built = subprocess.run([sys.executable, __file__, "--build", str(root), "--hidden", str(args.hidden),
                                "--layers", str(args.layers)], check=True, capture_output=True, text=True)
        facts = json.loads(built.stdout.strip().splitlines()[-1])
        folders = {name: root / name for name in MODELS}
        parameters, size = facts["parameters"], facts["model_bytes"]
        print(f"parameters: {parameters}", flush=True)
        print(f"model_bytes: {size}", flush=True)
        results["parameters"], results["model_bytes"] = parameters, size
        python = sys.executable
        baseline_seconds, baseline_rss = measured([python, "-c", "import torch, safetensors"])
        results["interpreter"] = {"seconds": baseline_seconds, "peak_rss": baseline_rss}
        for method, text in recipes(args.methods.split(",") if args.methods else None).items():
            config = root / f"{method}.yaml"
            config.write_text(localised(text, folders))
            ours_out, theirs_out = root / f"studbook-{method}", root / f"mergekit-{method}"
            # the inputs were just written, so both tools read them from the page cache
            ours = measured([python, "-m", "studbook.cli", "merge", "--seed", str(SEED), str(config), str(ours_out)])
            theirs = measured([python, "-c", MERGEKIT, str(config), str(theirs_out)])
            compared = subprocess.run([python, __file__, "--compare", str(ours_out), str(theirs_out)],
                                      check=True, capture_output=True, text=True)
            same, tensors = (json.loads(compared.stdout.strip().splitlines()[-1])[k] for k in ("identical", "tensors"))
            import shutil

            shutil.rmtree(ours_out)
            shutil.rmtree(theirs_out)  # 20 methods x 2 outputs would not fit the scratch disk
            row = {"studbook_seconds": ours[0], "mergekit_seconds": theirs[0],
                   "speedup": theirs[0] / ours[0], "studbook_peak_rss": ours[1],
                   "mergekit_peak_rss": theirs[1], "identical": same, "tensors": tensors,
                   "studbook_peak_vs_model_plus_output": ours[1] / (2 * size),
                   "mergekit_peak_vs_model_plus_output": theirs[1] / (2 * size)}
            results[method] = row
            for key, value in row.items():
                print(f"{method}_{key}: {value:.3f}" if isinstance(value, float) else f"{method}_{key}: {value}",
                      flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
