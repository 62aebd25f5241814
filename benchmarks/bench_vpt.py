"""VPT fine-tuning speed and memory on CPU: minetrain's VPTPolicy against the reference's.

One training step is what a fine-tuning run repeats: a window of frames through the policy with the
memory of the previous window carried (detached), each library's own behaviour-cloning objective
(minetrain's ``bc_terms`` at the reference's "sum" scale; the reference's ``BehaviorCloneCallback``),
backward, an AdamW step. This is a direct training step, not a full ``MineLightning`` run: data
loading and Lightning's loop are the same for both libraries and measured by ``bench_train.py``.

Both policies start from the same weights (the reference's random initialisation, saved by its
first child and loaded by ours) and see the same synthetic frames and actions, so the first step's
loss must agree; it is printed. Each measurement runs in its own child process (peak RSS per
child); repetitions alternate between the libraries and the figures are medians with ranges.
Rates come from process CPU time at a fixed thread count (default 1): on a shared machine wall
time mostly measures the neighbours; wall-clock rates are printed too. Memory is reported three
times: whole-process peak RSS; the step's own memory (peak RSS minus the RSS after imports: what a
GPU's peak allocation counts: parameters, gradients, optimizer state, activations); and the peak of
torch's live tensor bytes over one more (untimed) step, from the profiler's allocation records: what
``torch.cuda.max_memory_allocated`` counts on a GPU, without the host allocator's retention and
fragmentation that RSS also holds.

    python benchmarks/bench_vpt.py [--reps 3] [--steps 3] [--threads 1] [--precision bf16-mixed] [--quick]
        [--fused-adamw]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import REFERENCE_PYTHON, Clock, peak_rss_mb, rss_mb, run_child

# A reduced-width VPT (the published 1x is hidsize 1024, impala_width 4, 8 heads, 4 layers, 128
# steps) whose training step takes about a second on one CPU thread.
VPT_CONFIG = {
    "hidsize": 512,
    "img_shape": [128, 128, 3],
    "impala_width": 2,
    "impala_chans": [16, 32, 32],
    "attention_heads": 8,
    "attention_memory_size": 48,
    "timesteps": 16,
    "n_recurrence_layers": 2,
    "pointwise_ratio": 4,
    "pointwise_use_activation": False,
    "recurrence_is_residual": True,
    "use_pointwise_layer": True,
    "use_pre_lstm_ln": False,
    "init_norm_kwargs": {"batch_norm": False, "group_norm_groups": 1},
    "impala_kwargs": {"post_pool_groups": 1},
}
QUICK_CONFIG = {**VPT_CONFIG, "hidsize": 64, "impala_width": 1, "attention_heads": 2, "timesteps": 4}
QUICK_CONFIG["attention_memory_size"] = 12
# The reference's constructor also takes these (OpenAI's .model layout); they must have these values.
REFERENCE_ONLY = {"recurrence_type": "transformer", "attention_mask_style": "clipped_causal"}
TEMPERATURE = 2.0
BATCH = 2
KEYS = ("steps_per_cpu_s", "steps_per_wall_s", "peak_rss_mb", "step_memory_mb", "tensor_peak_mb")
LR, WEIGHT_DECAY = 4e-5, 0.000181  # MineStudio's vpt_raw_config


def _build(impl: str, config: dict, weights: str | None):
    import torch

    torch.manual_seed(0)
    if impl == "ours":
        from minetrain.models.vpt import VPTPolicy

        model = VPTPolicy(**config, temperature=TEMPERATURE)
    else:
        from minestudio.models.vpt import VPTPolicy

        model = VPTPolicy(policy_kwargs={**config, **REFERENCE_ONLY}, temperature=TEMPERATURE)
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
    return model


def _batch(config: dict, seed: int) -> dict:
    """Frames and recorded actions of one window, the same for both libraries."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    t, (h, w, _) = config["timesteps"], config["img_shape"]
    return {
        "image": torch.randint(0, 256, (BATCH, t, h, w, 3), dtype=torch.uint8, generator=gen),
        "agent_action": {
            "buttons": torch.randint(0, 8641, (BATCH, t, 1), generator=gen),
            # class 60 is the null camera move, which the objective leaves out: about half of the frames
            "camera": torch.where(
                torch.rand(BATCH, t, 1, generator=gen) < 0.5,
                torch.randint(0, 121, (BATCH, t, 1), generator=gen),
                torch.full((BATCH, t, 1), 60),
            ),
        },
    }


def _objective(impl: str):
    """The behaviour-cloning loss as each library's training loop computes it: latents -> loss."""
    if impl == "ours":
        from minetrain.offline.mine_callbacks.behavior_clone import bc_terms

        return lambda batch, latents, model: bc_terms(
            latents["pi_logits"], batch["agent_action"], None, reduction="sum"
        )["loss"]
    from minestudio.offline.mine_callbacks import BehaviorCloneCallback

    callback = BehaviorCloneCallback(weight=1.0)
    return lambda batch, latents, model: callback(batch, 0, "train", latents, model)["loss"]


def _detach(memory):
    import torch

    if isinstance(memory, torch.Tensor):
        return memory.detach()
    return type(memory)(_detach(m) for m in memory)


def tensor_peak_mb(step: Callable[[], None], held: list) -> float:
    """Peak MB of live tensors while ``step`` runs: the storages of ``held`` (alive before it: the
    parameters and optimizer state), plus the running sum of torch's allocations and frees during it,
    in the order the profiler recorded them (per op, so a temporary inside one op is not seen)."""
    from torch.profiler import ProfilerActivity, profile

    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # An op's own allocations net of its frees, its children's apart; "[memory]" records are the
    # allocations and frees made outside any op (a tensor dropped by Python).
    changes = sorted(
        (e.time_range.start, e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage)
        for e in prof.events()
    )
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return (sum(storages.values()) + peak) / 2**20


def measure(
    impl: str,
    config: dict,
    steps: int,
    threads: int,
    precision: str,
    weights: str | None,
    fused_adamw: bool = False,
) -> dict:
    """Run in a child process: warm-up step, then ``steps`` timed training steps, then one profiled step.

    ``step_memory_mb`` is what a GPU's peak allocation would count: the training step's own memory
    (parameters, gradients, optimizer state, activations), as peak RSS minus the RSS once torch and
    the library are imported, before the model is built. ``tensor_peak_mb`` counts the same from
    torch's own allocation records, over the profiled step."""
    import torch

    torch.set_num_threads(threads)
    objective = _objective(impl)
    _build(impl, QUICK_CONFIG, None)  # imports the policy's modules before the baseline
    rss_imported = rss_mb()
    model = _build(impl, config, weights).train()
    # minetrain's optim.fused_adamw=true (opt-in) where asked; the reference has no such setting.
    fused = fused_adamw and impl == "ours"
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY, fused=fused or None)
    batches = [_batch(config, seed) for seed in range(steps + 2)]
    memory = None
    losses = []

    def step(batch: dict) -> None:
        nonlocal memory
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
            latents, memory = model(batch, memory)
            loss = objective(batch, latents, model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        memory = _detach(memory)
        losses.append(loss.item())

    clock = Clock()
    for i, batch in enumerate(batches[:-1]):
        with clock if i else Clock():  # the first step is a warm-up
            step(batch)
    peak = peak_rss_mb()
    state = [value for per_param in optimizer.state.values() for value in per_param.values()]
    held = [*model.parameters(), *(value for value in state if torch.is_tensor(value))]
    return {
        "steps_per_cpu_s": steps / clock.cpu,
        "steps_per_wall_s": steps / clock.wall,
        "peak_rss_mb": peak,
        "step_memory_mb": peak - rss_imported,
        "tensor_peak_mb": tensor_peak_mb(lambda: step(batches[-1]), held),
        "losses": losses[:-1],
        "params": sum(p.numel() for p in model.parameters()),
    }


def _save_reference_weights(config: dict, path: str) -> None:
    import torch

    torch.save(_build("reference", config, None).state_dict(), path)


def _child(python: Path | str, impl: str, args: argparse.Namespace, weights: str | None) -> dict:
    cmd = ["--child", impl, "--steps", str(args.steps), "--threads", str(args.threads)]
    cmd += ["--precision", args.precision] + (["--quick"] if args.quick else [])
    cmd += ["--fused-adamw"] if args.fused_adamw else []
    cmd += ["--weights", weights] if weights else []
    return run_child(python, __file__, cmd, f"{impl} VPT benchmark")


def _summary(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3, help="child processes per library, interleaved")
    parser.add_argument(
        "--steps", type=int, default=3, help="timed training steps per child (after one warm-up)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each measurement")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny model, one repetition: checks the script runs"
    )
    parser.add_argument("--no-reference", action="store_true", help="measure minetrain only")
    parser.add_argument(
        "--fused-adamw", action="store_true", help="minetrain with optim.fused_adamw=true (opt-in)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--save-weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = QUICK_CONFIG if args.quick else VPT_CONFIG
    if args.save_weights:
        _save_reference_weights(config, args.save_weights)
        print(json.dumps(None))
        return
    if args.child:
        print(
            json.dumps(
                measure(
                    args.child,
                    config,
                    args.steps,
                    args.threads,
                    args.precision,
                    args.weights,
                    args.fused_adamw,
                )
            )
        )
        return
    if args.quick:
        args.reps, args.steps = 1, 1

    print(
        f"VPT config {config}, batch {BATCH} x {config['timesteps']} frames, AdamW, CPU, "
        f"{args.threads} thread(s), precision {args.precision}, {args.reps} x {args.steps} steps"
        + (", minetrain with fused AdamW" if args.fused_adamw else "")
    )
    reference = REFERENCE_PYTHON.exists() and not args.no_reference
    runs: dict[str, list[dict]] = {"minetrain": [], **({"reference": []} if reference else {})}
    with tempfile.TemporaryDirectory() as tmp:
        weights = None
        if reference:
            weights = str(Path(tmp) / "reference-init.pt")
            run_child(
                REFERENCE_PYTHON, __file__, ["--save-weights", weights] + ["--quick"] * args.quick, "saving"
            )
        for _ in range(args.reps):
            runs["minetrain"].append(_child(sys.executable, "ours", args, weights))
            if reference:
                runs["reference"].append(_child(REFERENCE_PYTHON, "reference", args, weights))

    figures = {}
    for name, results in runs.items():
        figures[name] = {key: [r[key] for r in results] for key in KEYS}
        print(
            f"{name:>10}: {_summary(figures[name]['steps_per_cpu_s'], '.3f')} steps/CPU-s, "
            f"{_summary(figures[name]['steps_per_wall_s'], '.3f')} steps/wall-s, "
            f"peak RSS {_summary(figures[name]['peak_rss_mb'], '.0f')} MB "
            f"(step's own {_summary(figures[name]['step_memory_mb'], '.0f')} MB), "
            f"peak live tensors {_summary(figures[name]['tensor_peak_mb'], '.0f')} MB, "
            f"{results[0]['params']:,} params, first-step loss {results[0]['losses'][0]:.6f}"
        )
    if reference:
        ratios = {
            key: [o / r for o, r in zip(figures["minetrain"][key], figures["reference"][key], strict=True)]
            for key in KEYS
        }
        figures["ratio"] = ratios
        print(
            f"     ratio: steps/CPU-s x{_summary(ratios['steps_per_cpu_s'], '.2f')}, "
            f"steps/wall-s x{_summary(ratios['steps_per_wall_s'], '.2f')}, "
            f"peak RSS x{_summary(ratios['peak_rss_mb'], '.2f')}, "
            f"step memory x{_summary(ratios['step_memory_mb'], '.2f')}, "
            f"live tensors x{_summary(ratios['tensor_peak_mb'], '.2f')} "
            "(speed: >1 is faster; memory: <1 is smaller; per repetition, paired)"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"config": config, "batch": BATCH, "figures": figures}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
