"""Generate VPTPolicy parity fixtures with the reference library (MineStudio 1.1.6).

Run in the reference venv, offline:
    HF_HUB_OFFLINE=1 /tmp/reference-venv/bin/python scripts/make_vpt_fixtures.py

Writes tests/fixtures/model_vpt_ref/ for a small random VPT (fixed seed):
- small.model: the architecture as OpenAI ships it (pickled kwargs under model.args.net.args and
  model.args.pi_head_opts);
- small.weights.gz: the reference policy's state dict as OpenAI's ``.weights`` (torch.save), gzipped;
- small_minestudio.ckpt.gz: the same weights as a MineStudio Lightning checkpoint (``mine_policy.``
  keys), gzipped;
- hub/config.json + hub/model.safetensors.gz: the reference's own ``save_pretrained`` (Hub layout);
- io.npz: two consecutive windows (frames, episode flags, with a new episode inside the second
  window for sample 1) and the reference outputs after each: camera log-probabilities, buttons
  log-probabilities at ``button_index`` (a fixed random subset of the 8641 classes, to keep the
  file small), value and memory;
- counts.json: parameter counts of the small model and of the 1x/2x/3x published shapes.

Weights are rounded to 3 significant bits so the files compress to a few hundred KB; the reference
runs on the rounded weights, so parity is exact all the same. MineStudio's ``VPTPolicy.forward``
ignores episode flags, so the outputs come from its network called as OpenAI's
``MinecraftAgentPolicy.forward`` calls it (with ``first``); the first window is also checked
against MineStudio's own forward.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch
from minestudio.models.vpt import VPTPolicy

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "model_vpt_ref"
PUBLISHED = {
    "attention_mask_style": "clipped_causal",
    "attention_memory_size": 256,
    "diff_mlp_embedding": False,
    "img_shape": [128, 128, 3],
    "impala_chans": [16, 32, 32],
    "impala_kwargs": {"post_pool_groups": 1},
    "init_norm_kwargs": {"batch_norm": False, "group_norm_groups": 1},
    "n_recurrence_layers": 4,
    "only_img_input": True,
    "pointwise_ratio": 4,
    "pointwise_use_activation": False,
    "recurrence_is_residual": True,
    "recurrence_type": "transformer",
    "timesteps": 128,
    "use_pointwise_layer": True,
    "use_pre_lstm_ln": False,
}
# Width and heads of OpenAI's 1x/2x/3x models (2x: agent.py; 1x/3x: their .model files as dumped
# in public code; 3x's head count is not published there: 24, i.e. 128 per head, assumed).
SHAPES = {
    "1x": {"hidsize": 1024, "impala_width": 4, "attention_heads": 8},
    "2x": {"hidsize": 2048, "impala_width": 8, "attention_heads": 16},
    "3x": {"hidsize": 3072, "impala_width": 12, "attention_heads": 24},
}
SMALL = {
    **PUBLISHED,
    "hidsize": 4,
    "attention_heads": 2,
    "impala_width": 1,
    "impala_chans": [2, 4, 4],
    "img_shape": [24, 24, 3],
    "attention_memory_size": 10,
    "timesteps": 6,
    "n_recurrence_layers": 2,
}
TEMPERATURE = 2.0
BATCH, WINDOW = 2, 6
N_BUTTONS_KEPT = 256


def perturb_and_round(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Move every weight off its trivial init (LayerNorm ones, zero biases), then keep 3 significant
    bits so the weight files compress well."""
    with torch.no_grad():
        for tensor in model.parameters():
            noise = torch.randn(tensor.shape, generator=generator)
            if tensor.ndim <= 1:
                tensor.add_(noise * 0.1)
            else:
                tensor.mul_(1 + noise * 0.05)
        model.value_head.normalizer.running_mean.fill_(0.3)
        model.value_head.normalizer.running_mean_sq.fill_(0.5)
        model.value_head.normalizer.debiasing_term.fill_(0.9)
        # Logits large enough that the head's rounding matters (fan-in init gives 0.01-scale weights).
        for head in model.pi_head.values():
            head.linear_layer.weight.mul_(10)
        for tensor in model.parameters():
            step = 2.0 ** (torch.floor(torch.log2(tensor.abs().clamp(min=1e-30))) - 2)
            tensor.copy_(torch.round(tensor / step) * step)


def gzip_bytes(data: bytes, path: Path) -> None:
    path.write_bytes(gzip.compress(data, mtime=0))


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def reference_step(model: VPTPolicy, image: torch.Tensor, first: torch.Tensor, memory):
    """One window through the reference network with episode flags, as OpenAI's policy calls it."""
    (pi_h, v_h), memory = model.net({"image": image}, memory, context={"first": first})
    return model.pi_head(pi_h), model.value_head(v_h), memory


def count(kwargs: dict) -> dict:
    with torch.device("meta"):
        model = VPTPolicy(policy_kwargs=kwargs, temperature=TEMPERATURE)
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "net": sum(p.numel() for p in model.net.parameters()),
        "state_dict_keys": len(model.state_dict()),
    }


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "hub").mkdir(parents=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = VPTPolicy(policy_kwargs=SMALL, temperature=TEMPERATURE)
    perturb_and_round(model, gen)
    model.eval()

    model_file = {
        "model": {
            "args": {
                "net": {"args": SMALL, "function": "ypt.model.policy:MinecraftPolicy"},
                "pi_head_opts": {"temperature": TEMPERATURE},
            },
            "function": "ypt.model.policy:MinecraftAgentPolicy",
        },
    }
    (OUT / "small.model").write_bytes(pickle.dumps(model_file))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    gzip_bytes(torch_bytes(state), OUT / "small.weights.gz")
    ckpt = {
        "epoch": 0,
        "global_step": 7,
        "state_dict": {f"mine_policy.{key}": value for key, value in state.items()},
        "hyper_parameters": {"learning_rate": 4e-5, "weight_decay": 0.000181, "warmup_steps": 2000},
    }
    gzip_bytes(torch_bytes(ckpt), OUT / "small_minestudio.ckpt.gz")
    hub = OUT / "hub_tmp"
    model.save_pretrained(hub)
    shutil.copy(hub / "config.json", OUT / "hub" / "config.json")
    gzip_bytes((hub / "model.safetensors").read_bytes(), OUT / "hub" / "model.safetensors.gz")
    shutil.rmtree(hub)

    h, w = SMALL["img_shape"][:2]
    keep = torch.randperm(8641, generator=gen)[:N_BUTTONS_KEPT].sort().values
    arrays: dict[str, np.ndarray] = {"button_index": keep.numpy()}
    memory = model.initial_state(BATCH)
    for window in range(2):
        image = torch.randint(0, 256, (BATCH, WINDOW, h, w, 3), dtype=torch.uint8, generator=gen)
        first = torch.zeros(BATCH, WINDOW, dtype=torch.bool)
        if window == 1:
            first[1, 3] = True  # an episode starts inside the second window for sample 1
        with torch.no_grad():
            if window == 0:
                own, _ = model({"image": image}, None)
            pi, vpred, memory = reference_step(model, image, first, memory)
            if window == 0:
                for key in ("buttons", "camera"):
                    assert torch.equal(own["pi_logits"][key], pi[key])
        prefix = f"w{window}_"
        arrays[prefix + "image"] = image.numpy()
        arrays[prefix + "first"] = first.numpy()
        arrays[prefix + "buttons"] = pi["buttons"][:, :, 0, keep].numpy()
        arrays[prefix + "camera"] = pi["camera"][:, :, 0].numpy()
        arrays[prefix + "vpred"] = vpred.numpy()
        for i, tensor in enumerate(memory):
            arrays[f"{prefix}memory{i}"] = tensor.numpy()
    np.savez_compressed(OUT / "io.npz", **arrays)

    counts = {
        "small": count(SMALL),
        **{name: {"shape": shape, **count({**PUBLISHED, **shape})} for name, shape in SHAPES.items()},
    }
    (OUT / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    sizes = {p.name: p.stat().st_size for p in sorted(OUT.rglob("*")) if p.is_file()}
    print(f"wrote {OUT}: {json.dumps(counts)}\n{sizes}")


if __name__ == "__main__":
    main()
