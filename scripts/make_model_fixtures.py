"""Generate RocketPolicy parity fixtures with the reference library (MineStudio 1.1.6).

Run in the reference venv, offline:
    HF_HUB_OFFLINE=1 /tmp/reference-venv/bin/python scripts/make_model_fixtures.py

Writes tests/fixtures/model_rocket_ref/:
- model.safetensors + config.json: a small reference RocketPolicy (random weights, fixed seed)
  saved with the reference's own ``save_pretrained`` (its Hub layout);
- io.npz: inputs of two consecutive windows (images, masks, obj_id, first flags) and the
  reference outputs (action log-probabilities, value) and memory after each window;
- counts.json: parameter counts of the seed configuration in the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import timm
import torch

_create_model = timm.create_model


def _offline_create_model(name: str, pretrained: bool = False, **kwargs):
    """The reference always asks timm for pretrained weights; there is no network here."""
    return _create_model(name, pretrained=False, **kwargs)


timm.create_model = _offline_create_model

from minestudio.models import RocketPolicy  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "model_rocket_ref"
SMALL = {
    "backbone": "test_efficientnet",
    "hiddim": 16,
    "num_heads": 2,
    "num_layers": 2,
    "timesteps": 6,
    "mem_len": 4,
}
SEED = {
    "backbone": "efficientnet_b0.ra_in1k",
    "hiddim": 1024,
    "num_heads": 8,
    "num_layers": 4,
    "timesteps": 128,
    "mem_len": 128,
}
BATCH, WINDOW, SIZE = 2, 6, 64


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Move every weight and statistic off its trivial init (ones, zeros) so parity tests see them."""
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=generator) * 0.05
                if tensor.ndim <= 1:
                    tensor.add_(noise)
                else:
                    tensor.mul_(1 + noise)
        for name, tensor in model.named_buffers():
            if name.endswith("running_var"):
                tensor.abs_().add_(0.5)
        model.value_head.normalizer.running_mean.fill_(0.3)
        model.value_head.normalizer.running_mean_sq.fill_(0.5)
        model.value_head.normalizer.debiasing_term.fill_(0.9)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = RocketPolicy(**SMALL)
    perturb(model, gen)
    model.eval()
    model.save_pretrained(OUT)
    (OUT / "README.md").unlink(missing_ok=True)

    arrays: dict[str, np.ndarray] = {}
    memory = None
    for window in range(2):
        image = torch.randint(0, 256, (BATCH, WINDOW, SIZE, SIZE, 3), dtype=torch.uint8, generator=gen)
        mask = torch.randint(0, 2, (BATCH, WINDOW, SIZE, SIZE), dtype=torch.uint8, generator=gen)
        obj_id = torch.randint(-1, 9, (BATCH, WINDOW), generator=gen)
        first = torch.zeros(BATCH, WINDOW, dtype=torch.bool)
        if window == 1:
            first[1, 3] = True  # an episode starts inside the second window for sample 1
        model.first = first  # the reference reads its episode flags from this attribute
        batch = {"image": image, "segment": {"obj_id": obj_id, "obj_mask": mask}}
        with torch.no_grad():
            latents, memory = model(batch, memory)
        prefix = f"w{window}_"
        arrays[prefix + "image"] = image.numpy()
        arrays[prefix + "obj_mask"] = np.packbits(mask.numpy().astype(bool), axis=-1)
        arrays[prefix + "obj_id"] = obj_id.numpy()
        arrays[prefix + "first"] = first.numpy()
        for key in ("buttons", "camera"):
            arrays[prefix + key] = latents["pi_logits"][key][:, :, 0].numpy()
        arrays[prefix + "vpred"] = latents["vpred"].numpy()
        for i, tensor in enumerate(memory):
            arrays[f"{prefix}memory{i}"] = tensor.numpy()
    np.savez_compressed(OUT / "io.npz", **arrays)

    seed_model = RocketPolicy(**SEED)
    counts = {
        "seed_config": SEED,
        "total": sum(p.numel() for p in seed_model.parameters()),
        "value_head": sum(p.numel() for p in seed_model.value_head.parameters()),
        "state_dict_keys": len(seed_model.state_dict()),
    }
    (OUT / "counts.json").write_text(json.dumps(counts, indent=2) + "\n")
    print(f"wrote {OUT}: {counts}")


if __name__ == "__main__":
    main()
