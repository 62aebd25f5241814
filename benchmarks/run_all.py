"""The benchmark suite: loader, model and end-to-end training, minetrain vs the reference library.

Builds one synthetic dataset (224x224 frames with pixel noise so they decode at gameplay speed),
then measures, each in its own child process and for each implementation (the reference only when
its venv exists, /tmp/reference-venv):

- loader frames/s of the train DataLoader with 0 and 2 workers (batch 2, win_len 32, segmentation);
- model forward+backward steps/s, streaming inference frames/s and peak RSS (``bench_model``);
- end-to-end Lightning training steps/s and peak memory (``bench_train``), small config, in two
  settings: A, 1 torch thread and 2 loader workers (the model's own speed); B, what a user gets
  without tuning: torch's default threads (every core) and ``num_workers=0``;
- the VPT fine-tuning step (``bench_vpt``): steps/CPU-s, peak RSS, the step's own memory and its
  peak of live tensors, both libraries from the same initial weights on the same frames, fp32, 1
  thread.

Implementations alternate within each repetition (same machine load), and which one goes first
alternates between repetitions. Medians over repetitions are reported with their ranges; the ratio
column is median minetrain / median reference, next to the median (and range) of the per-repetition
ratios. Writes ``results.json`` and ``results.md`` to ``--out`` and, with ``--update-readme``, the
table into README.md's Benchmarks section.

    python benchmarks/run_all.py [--reps 3] [--only train vpt] [--no-reference] [--update-readme]
    python benchmarks/run_all.py --quick --out /tmp/bench   # smoke run, tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_model
import bench_train
import bench_vpt
import torch
from common import BATCH, CONFIG, REFERENCE_PYTHON, SIZE, children_cpu_s, ensure_dataset, run_child

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
README_START, README_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"

FULL = dict(
    size=SIZE,
    config=CONFIG,
    episodes=8,
    frames=320,
    noise=8.0,
    model_steps=2,
    stream_frames=8,
    train_steps=3,
    train_warmup=1,
    train_workers=2,
    vpt_config=bench_vpt.VPT_CONFIG,
    vpt_steps=3,
)
QUICK = dict(
    size=64,
    config={**CONFIG, "timesteps": 4, "mem_len": 4},
    episodes=2,
    frames=64,
    noise=8.0,
    model_steps=1,
    stream_frames=2,
    train_steps=1,
    train_warmup=1,
    train_workers=0,
    vpt_config=bench_vpt.QUICK_CONFIG,
    vpt_steps=1,
)

# Measurement groups: name -> (what the child measures, its settings). The train settings:
# A (1 torch thread, the suite's loader workers) and B (torch's default threads, no workers).
PLAN = {
    "loader_w0": ("loader", {"workers": 0}),
    "loader_w2": ("loader", {"workers": 2}),
    "model": ("model", {}),
    "train_defaults": ("train", {"threads": None, "workers": 0}),
    "train": ("train", {"threads": 1}),
    "vpt": ("vpt", {}),
}

# (key in the result, measurement group, label, unit, higher is better)
ROWS = [
    ("loader_w0", "loader_w0", "loader, 0 workers", "frames/s", True),
    ("loader_w2", "loader_w2", "loader, 2 workers", "frames/s", True),
    ("model_train", "model", "model fwd+bwd (1 thread)", "steps/CPU-s", True),
    ("model_stream", "model", "streaming inference (1 thread)", "frames/CPU-s", True),
    ("model_rss", "model", "model fwd+bwd peak RSS", "MB", False),
    ("train_wall", "train", "end-to-end train, A: 1 thread, workers", "steps/s", True),
    ("train_cpu", "train", "end-to-end train, A: 1 thread, workers", "steps/CPU-s", True),
    ("train_pss", "train", "train peak memory, process tree PSS (A)", "MB", False),
    ("train_rss", "train", "train peak RSS, trainer process (A)", "MB", False),
    ("train_default_wall", "train_defaults", "end-to-end train, B: defaults", "steps/s", True),
    ("train_default_cpu", "train_defaults", "end-to-end train, B: defaults", "steps/CPU-s", True),
    ("vpt_train", "vpt", "VPT fine-tune step (1 thread)", "steps/CPU-s", True),
    ("vpt_rss", "vpt", "VPT fine-tune step peak RSS", "MB", False),
    ("vpt_step_memory", "vpt", "VPT step's own memory (peak RSS - RSS after imports)", "MB", False),
    ("vpt_tensor_peak", "vpt", "VPT step's peak of live tensors (torch's allocations)", "MB", False),
]
# What each measurement's child returns -> the keys above.
FIGURES = {
    "loader_w0": {"loader_w0": "frames_per_s"},
    "loader_w2": {"loader_w2": "frames_per_s"},
    "model": {
        "model_train": "train_steps_per_s",
        "model_stream": "stream_frames_per_s",
        "model_rss": "train_peak_rss_mb",
    },
    "train": {
        "train_wall": "steps_per_wall_s",
        "train_cpu": "steps_per_cpu_s",
        "train_pss": "tree_peak_pss_mb",
        "train_rss": "trainer_peak_rss_mb",
    },
    "train_defaults": {"train_default_wall": "steps_per_wall_s", "train_default_cpu": "steps_per_cpu_s"},
    "vpt": {
        "vpt_train": "steps_per_cpu_s",
        "vpt_rss": "peak_rss_mb",
        "vpt_step_memory": "step_memory_mb",
        "vpt_tensor_peak": "tensor_peak_mb",
    },
}


def measure_loader(impl: str, data: str, workers: int, size: int, win_len: int) -> dict:
    """Child process: steady frames/s (after the first batch) over one epoch.

    A whole epoch: the reference's workers crash (segfault) when its iterator is dropped mid-epoch.
    """
    import torch

    torch.set_num_threads(1)
    module = bench_train.datamodule(impl, data, workers, win_len=win_len, size=size)
    module.setup("fit")
    loader = module.train_dataloader()
    start_cpu = time.process_time() + children_cpu_s()
    iterator = iter(loader)
    next(iterator)
    warm, frames = time.perf_counter(), 0
    for batch in iterator:
        frames += int(batch["mask"].sum())
    wall = time.perf_counter() - warm
    del iterator, loader, module  # joins the workers, so their CPU time is counted below
    cpu = time.process_time() + children_cpu_s() - start_cpu
    return {"frames_per_s": frames / wall, "frames_per_cpu_s": frames / cpu, "frames": frames}


def child(spec: dict) -> dict:
    """Dispatch one measurement described by ``spec`` (runs in the child process)."""
    what, impl, p = spec["what"], spec["impl"], spec["params"]
    config, size = p["config"], p["size"]
    if what == "loader":
        return measure_loader(impl, spec["data"], spec["workers"], size, config["timesteps"])
    if what == "model":
        return bench_model.measure(impl, p["model_steps"], p["stream_frames"], 1, config, size)
    if what == "vpt":
        return bench_vpt.measure(impl, p["vpt_config"], p["vpt_steps"], 1, "32", spec["vpt_weights"])
    workers = spec.get("workers", p["train_workers"])
    return bench_train.measure(
        impl, spec["data"], p["train_steps"], p["train_warmup"], workers, spec["threads"], "32", config, size
    )


def one_round(
    impls: dict[str, Path | str],
    data: Path,
    params: dict,
    groups: list[str],
    shared: bool,
    flip: bool,
    vpt_weights: str | None,
) -> dict[str, dict[str, float]]:
    """Every measurement in ``groups`` once for each implementation, alternating implementations
    (in reverse order with ``flip``, so neither always runs first).

    Each measurement runs in a child process of its own, or, with ``shared`` (the smoke run), all
    of one implementation's in one child: faster to start, but the memory figures then mix.
    """
    batches = [groups] if shared else [[group] for group in groups]
    order = list(impls)[::-1] if flip else list(impls)
    results: dict[str, dict[str, dict]] = {name: {} for name in impls}
    for batch in batches:
        for name in order:
            impl = "ours" if name == "minetrain" else "reference"
            specs = [
                {
                    "what": PLAN[g][0],
                    "impl": impl,
                    "data": str(data),
                    "params": params,
                    "vpt_weights": vpt_weights,
                    **PLAN[g][1],
                }
                for g in batch
            ]
            found = run_child(impls[name], __file__, ["--child", json.dumps(specs)], f"{name} {batch}")
            results[name].update(zip(batch, found, strict=True))
            print(f"  {name} {', '.join(batch)}: {json.dumps(found)}", flush=True)
    return {
        name: {key: measured[group][field] for group in groups for key, field in FIGURES[group].items()}
        for name, measured in results.items()
    }


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Per figure: median and range over repetitions; median minetrain / median reference, and the
    median and range of the per-repetition ratios."""
    names = list(rounds[0])
    keys = list(rounds[0][names[0]])
    median = {n: {k: statistics.median(r[n][k] for r in rounds) for k in keys} for n in names}
    spread = {
        n: {k: [min(r[n][k] for r in rounds), max(r[n][k] for r in rounds)] for k in keys} for n in names
    }
    summary: dict[str, Any] = {"median": median, "range": spread}
    if "reference" in names:
        pairs = {k: [r["minetrain"][k] / r["reference"][k] for r in rounds] for k in keys}
        summary["ratio"] = {k: median["minetrain"][k] / median["reference"][k] for k in keys}
        summary["pair_ratio"] = {k: statistics.median(v) for k, v in pairs.items()}
        summary["pair_ratio_range"] = {k: [min(v), max(v)] for k, v in pairs.items()}
    return {**summary, "rounds": rounds}


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _spread(value: float, low: float, high: float) -> str:
    return f"{_figure(value)} ({_figure(low)}-{_figure(high)})"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    medians, spread = summary["median"], summary["range"]
    has_ref = "reference" in medians
    head = "| measure | unit | minetrain | reference | minetrain / reference | per-repetition ratio |"
    head = head if has_ref else "| measure | unit | minetrain |"
    lines = [head, "|" + "---|" * (6 if has_ref else 3)]
    for key, _, label, unit, higher in ROWS:
        if key not in medians["minetrain"]:
            continue
        row = f"| {label} | {unit} | {_spread(medians['minetrain'][key], *spread['minetrain'][key])} |"
        if has_ref:
            better = "higher is better" if higher else "lower is better"
            ref = _spread(medians["reference"][key], *spread["reference"][key])
            low, high = summary["pair_ratio_range"][key]
            row += (
                f" {ref} | **{summary['ratio'][key]:.2f}x** ({better}) |"
                f" {summary['pair_ratio'][key]:.2f}x ({low:.2f}-{high:.2f}) |"
            )
        lines.append(row)
    c = meta["config"]
    lines.append("")
    lines.append(
        f"Medians (min-max) of {meta['reps']} repetition(s), implementations alternating, "
        f"{meta['date']}, {meta['cpus']} CPU cores, fp32, "
        f"{c['backbone']} hiddim {c['hiddim']}, {c['num_heads']} heads, {c['num_layers']} layers, "
        f"win_len/timesteps {c['timesteps']}, mem_len {c['mem_len']}, batch {BATCH}, "
        f"{meta['size']}x{meta['size']} frames with pixel noise (gameplay decode speed); "
        f"train A: {meta['train_workers']} loader workers, 1 torch thread; "
        f"train B: num_workers=0, torch's default threads ({meta['torch_threads']}); "
        f"{meta['params']['train_steps']} timed steps after {meta['params']['train_warmup']}. "
        f"VPT step: `bench_vpt.py`'s config, batch {bench_vpt.BATCH} x "
        f"{meta['params']['vpt_config']['timesteps']} frames of 128x128, AdamW, fp32, 1 thread, "
        f"{meta['params']['vpt_steps']} timed steps after 1, both libraries from the same weights."
    )
    return "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    text = README.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    README.write_text(text[:start] + "\n\n" + table + "\n" + text[end:])


def write_results(out: Path, rounds: list[dict], params: dict, groups: list[str], quick: bool) -> str:
    """Write results.json and results.md for the repetitions so far; returns the table."""
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "reps": len(rounds),
        "quick": quick,
        "size": params["size"],
        "config": params["config"],
        "train_workers": params["train_workers"],
        "torch_threads": torch.get_num_threads(),
        "measured": groups,
        "params": params,
    }
    summary = summarise(rounds)
    table = markdown(summary, meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"meta": meta, **summary}, indent=2) + "\n")
    (out / "results.md").write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--no-reference", action="store_true", help="minetrain only")
    parser.add_argument(
        "--only", nargs="+", choices=sorted({what for what, _ in PLAN.values()}), help="measure only these"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/minetrain-bench-suite"))
    parser.add_argument("--out", type=Path, default=HERE, help="where results.json/.md go")
    parser.add_argument("--update-readme", action="store_true", help="write the table into README.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps([child(spec) for spec in json.loads(args.child)]))
        return

    params, reps = (QUICK, 1) if args.quick else (FULL, args.reps)
    impls: dict[str, Path | str] = {"minetrain": sys.executable}
    if REFERENCE_PYTHON.exists() and not args.no_reference:
        impls["reference"] = REFERENCE_PYTHON
    tag = f"{'quick' if args.quick else 'full'}-{params['size']}"
    data = ensure_dataset(
        args.data_dir / tag, params["episodes"], params["frames"], params["size"], params["noise"]
    )
    groups = [g for g, (what, _) in PLAN.items() if not args.only or what in args.only]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        vpt_weights = None
        if "vpt" in groups and "reference" in impls:
            # The reference's initialisation, loaded by both (bench_vpt's same start).
            vpt_weights = str(Path(tmp) / "vpt-init.pt")
            run_child(
                REFERENCE_PYTHON,
                bench_vpt.__file__,
                ["--save-weights", vpt_weights] + ["--quick"] * args.quick,
                "saving VPT weights",
            )
        for rep in range(reps):
            load = os.getloadavg()[0]
            print(f"repetition {rep + 1}/{reps} ({', '.join(impls)}); load {load:.2f}", flush=True)
            flip = rep % 2 == 1
            rounds.append(one_round(impls, data, params, groups, args.quick, flip, vpt_weights))
            # Written after every repetition: a run stopped early still leaves the ones it finished.
            table = write_results(args.out, rounds, params, groups, args.quick)
    print(table)
    if args.update_readme:
        update_readme(table)


if __name__ == "__main__":
    main()
