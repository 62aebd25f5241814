"""The benchmark suite: loader, model and end-to-end training, minetrain vs the reference library.

Builds one synthetic dataset (224x224 frames with pixel noise so they decode at gameplay speed),
then measures, each in its own child process and for each implementation (the reference only when
its venv exists, /tmp/reference-venv):

- loader frames/s of the train DataLoader with 0 and 2 workers (batch 2, win_len 32, segmentation);
- model forward+backward steps/s, streaming inference frames/s and peak RSS (``bench_model``);
- end-to-end Lightning training steps/s and peak memory (``bench_train``), small config.

Implementations alternate within each repetition (same machine load); medians over repetitions are
reported, ratios are minetrain / reference. Writes ``results.json`` and ``results.md`` to ``--out``
and, with ``--update-readme``, the table into README.md's Benchmarks section.

    python benchmarks/run_all.py [--reps 3] [--no-reference] [--update-readme]
    python benchmarks/run_all.py --quick --out /tmp/bench   # smoke run, tiny sizes, a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import bench_model
import bench_train
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
)

# (key in the result, label, unit, higher is better)
ROWS = [
    ("loader_w0", "loader, 0 workers", "frames/s", True),
    ("loader_w2", "loader, 2 workers", "frames/s", True),
    ("model_train", "model fwd+bwd (1 thread)", "steps/CPU-s", True),
    ("model_stream", "streaming inference (1 thread)", "frames/CPU-s", True),
    ("model_rss", "model fwd+bwd peak RSS", "MB", False),
    ("train_wall", "end-to-end train", "steps/s", True),
    ("train_cpu", "end-to-end train", "steps/CPU-s", True),
    ("train_pss", "train peak memory, process tree PSS", "MB", False),
    ("train_rss", "train peak RSS, trainer process", "MB", False),
]


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
    return bench_train.measure(
        impl, spec["data"], p["train_steps"], p["train_warmup"], p["train_workers"], 1, "32", config, size
    )


def one_round(
    impls: dict[str, Path | str], data: Path, params: dict, shared: bool
) -> dict[str, dict[str, float]]:
    """Every measurement once for each implementation, alternating implementations.

    Each measurement runs in a child process of its own, or, with ``shared`` (the smoke run), all
    of one implementation's in one child: faster to start, but the memory figures then mix.
    """
    plan = [("loader", {"workers": 0}), ("loader", {"workers": 2}), ("model", {}), ("train", {})]
    groups = [plan] if shared else [[item] for item in plan]
    results: dict[str, list[dict]] = {name: [] for name in impls}
    for group in groups:
        for name, python in impls.items():
            impl = "ours" if name == "minetrain" else "reference"
            specs = [
                {"what": what, "impl": impl, "data": str(data), "params": params, **extra}
                for what, extra in group
            ]
            results[name] += run_child(python, __file__, ["--child", json.dumps(specs)], f"{name} {group}")
    out: dict[str, dict[str, float]] = {}
    for name, (w0, w2, model, train) in results.items():
        out[name] = {
            "loader_w0": w0["frames_per_s"],
            "loader_w2": w2["frames_per_s"],
            "model_train": model["train_steps_per_s"],
            "model_stream": model["stream_frames_per_s"],
            "model_rss": model["train_peak_rss_mb"],
            "train_wall": train["steps_per_wall_s"],
            "train_cpu": train["steps_per_cpu_s"],
            "train_pss": train["tree_peak_pss_mb"],
            "train_rss": train["trainer_peak_rss_mb"],
        }
    return out


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Medians per figure, and the median of the per-round ratios minetrain / reference."""
    names = list(rounds[0])
    medians = {n: {k: statistics.median(r[n][k] for r in rounds) for k, *_ in ROWS} for n in names}
    ratios = {}
    if "reference" in names:
        ratios = {
            k: statistics.median(r["minetrain"][k] / r["reference"][k] for r in rounds) for k, *_ in ROWS
        }
    return {"median": medians, "ratio": ratios, "rounds": rounds}


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    medians, ratios = summary["median"], summary["ratio"]
    has_ref = "reference" in medians
    head = (
        "| measure | unit | minetrain | reference | minetrain / reference |"
        if has_ref
        else ("| measure | unit | minetrain |")
    )
    lines = [head, "|" + "---|" * (5 if has_ref else 3)]
    for key, label, unit, higher in ROWS:
        row = f"| {label} | {unit} | {_figure(medians['minetrain'][key])} |"
        if has_ref:
            better = "higher is better" if higher else "lower is better"
            row += f" {_figure(medians['reference'][key])} | **{ratios[key]:.2f}x** ({better}) |"
        lines.append(row)
    c = meta["config"]
    lines.append("")
    lines.append(
        f"Medians of {meta['reps']} repetition(s), {meta['date']}, {meta['cpus']} CPU cores, fp32, "
        f"{c['backbone']} hiddim {c['hiddim']}, {c['num_heads']} heads, {c['num_layers']} layers, "
        f"win_len/timesteps {c['timesteps']}, mem_len {c['mem_len']}, batch {BATCH}, "
        f"{meta['size']}x{meta['size']} frames with pixel noise (gameplay decode speed); "
        f"train: {meta['train_workers']} loader workers, 1 torch thread."
    )
    return "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    text = README.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    README.write_text(text[:start] + "\n\n" + table + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument("--no-reference", action="store_true", help="minetrain only")
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
    rounds = []
    for rep in range(reps):
        print(f"repetition {rep + 1}/{reps} ({', '.join(impls)}); load {os.getloadavg()[0]:.2f}", flush=True)
        rounds.append(one_round(impls, data, params, shared=args.quick))
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "reps": reps,
        "quick": args.quick,
        "size": params["size"],
        "config": params["config"],
        "train_workers": params["train_workers"],
        "params": params,
    }
    summary = summarise(rounds)
    table = markdown(summary, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, **summary}, indent=2) + "\n")
    (args.out / "results.md").write_text(table)
    print(table)
    if args.update_readme:
        update_readme(table)


if __name__ == "__main__":
    main()
