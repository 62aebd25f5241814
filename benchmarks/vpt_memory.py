"""GPU memory of fine-tuning VPT's published shapes (1x/2x/3x) in bf16, estimated from activation sizes
measured on CPU.

What a training step holds at its peak (the start of backward):
- model state: fp32 weights, fp32 gradients and AdamW's two moments, 16 bytes per parameter;
- the activations autograd saved for backward, measured here: every tensor a bf16-autocast forward
  (and the BC loss) saves is counted once (by storage) with ``saved_tensors_hooks``, per module
  (the three ImpalaCNN stacks, the dense layers, the transformer, the heads), at two batch sizes,
  so each part splits into a per-frame (CNN) or per-window (transformer) slope and a fixed part
  (the bf16 weight copies autocast caches), then scaled to ``--batch`` x ``--window``;
- a backward working set: twice the largest saved tensor (its gradient and the next one's).
With ``checkpoint_cnn=True`` only the stack outputs are kept and one stack's activations are
recomputed at a time: peak = state + kept + largest stack's activations + working set.

CPU autocast casts a few operations differently from CUDA's (GroupNorm runs in bf16 on CPU, fp32 on CUDA), and
allocator fragmentation is not modelled: read the figures as estimates with ~10% uncertainty.

    python benchmarks/vpt_memory.py [--batch 8] [--window 128] [--gpu-gb 80] [--shapes 1x 2x 3x]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

# Width and heads of OpenAI's 1x/2x/3x models (the rest is VPTPolicy's defaults, the published
# architecture); 3x's head count is assumed (128 per head), it changes no activation size.
SHAPES = {
    "1x": {"hidsize": 1024, "impala_width": 4, "attention_heads": 8},
    "2x": {"hidsize": 2048, "impala_width": 8, "attention_heads": 16},
    "3x": {"hidsize": 3072, "impala_width": 12, "attention_heads": 24},
}
STATE_BYTES_PER_PARAM = 16  # fp32 weights + fp32 gradients + AdamW exp_avg and exp_avg_sq
GB = 1e9


class SavedBytes:
    """Bytes of the tensors autograd saves for backward, per module label, each storage counted once."""

    def __init__(self, model: torch.nn.Module, labels: dict[str, torch.nn.Module]) -> None:
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        # Weight copies are saved as they are or transposed (matrix products).
        self.param_shapes = {tuple(p.shape) for p in model.parameters()}
        self.param_shapes |= {shape[::-1] for shape in self.param_shapes}
        self.labels = labels
        self.current = ["other"]
        self.seen: dict[int, str] = {}
        self.sizes: dict[int, int] = {}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self.params and key not in self.seen:
            # Autocast's bf16 copies of the weights: a fixed cost, not an activation.
            cast = tensor.dtype == torch.bfloat16 and tuple(tensor.shape) in self.param_shapes
            self.seen[key] = "weight_casts" if cast else self.current[-1]
            self.sizes[key] = storage.nbytes()
        return tensor

    @contextmanager
    def recording(self):
        def enter(label: str):
            def hook(module, args) -> None:
                self.current.append(label)

            return hook

        def leave(module, args, output) -> None:
            self.current.pop()

        handles = []
        for label, module in self.labels.items():
            handles.append(module.register_forward_pre_hook(enter(label)))
            handles.append(module.register_forward_hook(leave))
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                yield self
        finally:
            for handle in handles:
                handle.remove()

    def per_label(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for key, label in self.seen.items():
            out[label] += self.sizes[key]
        return dict(out)

    def largest(self) -> int:
        """The largest saved activation (weight copies excluded)."""
        return max((n for k, n in self.sizes.items() if self.seen[k] != "weight_casts"), default=0)


def _encoder_pass(model, frames: int, size: tuple[int, int]):
    """Saved bytes of the image encoder on ``frames`` frames, per stack, plus the stack outputs' bytes."""
    cnn = model.net.img_process.cnn
    labels = {f"stack{i}": stack for i, stack in enumerate(cnn.stacks)}
    labels["dense"] = model.net.img_process.linear
    labels["cnn_dense"] = cnn.dense
    outputs: list[int] = []

    def record(module, args, output) -> None:
        outputs.append(output.nbytes)

    hooks = [stack.register_forward_hook(record) for stack in cnn.stacks]
    image = torch.randint(0, 256, (frames, *size, 3), dtype=torch.uint8)
    counter = SavedBytes(model, labels)
    with counter.recording(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.net.img_process(image)
        out.float().sum()
    for hook in hooks:
        hook.remove()
    return counter.per_label(), outputs, counter.largest()


def _trunk_pass(model, batch: int, window: int):
    """Saved bytes of the transformer, heads and BC loss on ``batch`` windows of features."""
    from minetrain.offline.mine_callbacks.behavior_clone import bc_terms

    hidsize = model.config["hidsize"]
    features = torch.randn(batch, window, hidsize, requires_grad=True)
    first = torch.zeros(batch, window, dtype=torch.bool)
    memory = model.initial_state(batch)
    actions = {
        "buttons": torch.randint(0, 8641, (batch, window)),
        "camera": torch.randint(0, 121, (batch, window)),
    }
    net = model.net
    labels = {"transformer": net.recurrent_layer, "pi_head": model.pi_head, "value_head": model.value_head}
    counter = SavedBytes(model, labels)
    with counter.recording(), torch.autocast("cpu", dtype=torch.bfloat16):
        x, _ = net.recurrent_layer(features, first, memory)
        x = net.final_ln(net.lastlayer(torch.relu(x)))
        logits = model.pi_head(x)
        loss = bc_terms(logits, actions, None, reduction="sum")["loss"] + model.value_head(x).float().mean()
        loss.detach()
    return counter.per_label(), counter.largest()


def _slopes(one: dict[str, int], two: dict[str, int], n1: int, n2: int) -> tuple[dict, dict]:
    keys = set(one) | set(two)
    slope = {k: (two.get(k, 0) - one.get(k, 0)) / (n2 - n1) for k in keys}
    fixed = {k: one.get(k, 0) - slope[k] * n1 for k in keys}
    return slope, fixed


def estimate(name: str, shape: dict, batch: int, window: int) -> dict:
    from minetrain.models.vpt import VPTPolicy

    torch.manual_seed(0)
    model = VPTPolicy(**shape).train()
    params = sum(p.numel() for p in model.parameters())
    size = tuple(model.config["img_shape"][:2])
    start = time.perf_counter()
    enc1, out1, big1 = _encoder_pass(model, 1, size)
    enc2, out2, big2 = _encoder_pass(model, 2, size)
    cnn_slope, cnn_fixed = _slopes(enc1, enc2, 1, 2)
    stack_out = [(b - a) for a, b in zip(out1, out2, strict=True)]
    trunk1, tbig1 = _trunk_pass(model, 1, window)
    trunk2, tbig2 = _trunk_pass(model, 2, window)
    trunk_slope, trunk_fixed = _slopes(trunk1, trunk2, 1, 2)
    frames = batch * window
    parts = {k: v * frames for k, v in cnn_slope.items()} | {k: v * batch for k, v in trunk_slope.items()}
    fixed = sum(cnn_fixed.values()) + sum(trunk_fixed.values())
    activations = sum(parts.values()) + fixed
    working = 2 * max((big2 - big1) * frames, (tbig2 - tbig1) * batch)
    state = STATE_BYTES_PER_PARAM * params
    stacks = [parts.get(f"stack{i}", 0) for i in range(len(stack_out))]
    kept = activations - sum(stacks) + sum(o * frames for o in stack_out)
    return {
        "name": name,
        "params": params,
        "state": state,
        "activations": activations,
        "parts": parts,
        "peak": state + activations + working,
        "peak_checkpoint": state + kept + max(stacks) + working,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"VPT fine-tuning memory, batch {args.batch} x {args.window} frames, bf16 autocast, AdamW")
    print("| shape | params | weights+grads+AdamW | activations (CNN / transformer+heads) | peak |", end="")
    print(" peak, checkpoint_cnn |\n|---|---|---|---|---|---|")
    for name in args.shapes:
        r = estimate(name, SHAPES[name], args.batch, args.window)
        cnn = sum(v for k, v in r["parts"].items() if k.startswith(("stack", "dense", "cnn_dense")))
        other = r["activations"] - cnn
        fits = lambda b: f"{b / GB:.1f} GB ({b / GB / args.gpu_gb:.0%} of {args.gpu_gb:g})"  # noqa: E731
        activations = f"{r['activations'] / GB:.1f} GB ({cnn / GB:.1f} / {other / GB:.1f})"
        print(
            f"| {name} | {r['params'] / 1e6:.1f}M | {r['state'] / GB:.1f} GB | {activations} "
            f"| {fits(r['peak'])} | {fits(r['peak_checkpoint'])} |"
        )
        stacks = ", ".join(f"{k} {v / GB:.1f}" for k, v in sorted(r["parts"].items()))
        print(f"  {name} activation parts (GB): {stacks}; measured in {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
