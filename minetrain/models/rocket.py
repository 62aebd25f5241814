"""ROCKET-1 policy: frames + interaction mask -> timm backbone -> spatial pooling -> recurrent memory
blocks conditioned on the interaction type -> categorical action heads.

Parameter names match the reference library's ``RocketPolicy`` so its checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from minetrain.errors import ConfigError
from minetrain.models import checkpoint, rocket_formats
from minetrain.models.acting import StepActing
from minetrain.models.backbone import build_backbone, checkpoint_stages
from minetrain.models.folding import FoldedCopy
from minetrain.models.fused import REBUILD, rebuilt_activations
from minetrain.models.heads import ActionHeads, ValueHead
from minetrain.models.inputs import (
    MAX_OBJ_ID,
    MIN_OBJ_ID,
    add_step_axis,
    carried_memory,
    parse_batch,
)
from minetrain.models.memory import FanInLinear, RecurrentBlocks

N_INTERACTIONS = MAX_OBJ_ID - MIN_OBJ_ID + 1


class RocketPolicy(StepActing, nn.Module):
    """The ROCKET-1 policy.

    ``forward(batch, memory) -> (outputs, memory)``: ``outputs["pi_logits"]`` holds log-probabilities
    ``{"buttons": (B,T,8641), "camera": (B,T,121)}`` (plus ``"vpred"`` (B,T,1) with the value head).
    Memory is a list of tensors, batch first, and is returned detached (Transformer-XL style); the
    module keeps no state between calls, so any batch size works at any call.

    ``timesteps`` is the training window length (recorded in the config); each step attends to
    itself and the ``mem_len - 1`` steps before it, across window boundaries through the memory.
    ``backbone_weights`` is an optional local timm state dict for the backbone (no downloads);
    ``value_head`` adds the value output; ``nucleus_prob`` is the top-p mass ``get_action``
    samples from (None: plain sampling).

    ``checkpoint_backbone`` trades compute for memory in training: each stage of the backbone runs
    under activation checkpointing, so only the stage outputs are kept for backward and one
    stage's activations are recomputed at a time. Outputs, gradients and BatchNorm statistics are
    the same as without it. A training setting, not part of the saved config.

    ``rebuild_activations`` trades less compute for memory: some backbone activations are not
    kept for backward but rebuilt when backward needs them (``fused.py``). ``"products"`` (the
    default) rebuilds the squeeze-excitation products, one multiplication each: about a tenth
    less peak memory in a training step of the benchmark configuration at no measurable cost.
    ``"all"`` also rebuilds the BatchNorm+SiLU outputs that convolutions keep, one SiLU pass
    each: about a quarter less memory for about a tenth more backbone compute. ``"none"`` keeps
    everything. Outputs are the same and gradients equal up to float rounding; a training
    setting, not saved, and unused with ``checkpoint_backbone``, which keeps no activations.

    In eval mode without autograd (``get_action``, validation) the backbone runs as a derived copy
    with BatchNorm folded into the convolutions, which is faster (streaming inference in
    ``benchmarks/bench_model.py``); outputs equal the unfolded
    ones up to float rounding (1e-5 on the parity fixtures) and the copy is rebuilt whenever the
    weights change.
    """

    policy_name: ClassVar[str] = "rocket"
    # What ``model.compile`` compiles (``minetrain.models.compiled``): the heavy, host-sync-free parts.
    compile_parts: ClassVar[tuple[str, ...]] = ("backbone", "pooling", "recurrent")
    # What a checkpoint recorded (ours, or the reference's names and none) -> constructor arguments.
    checkpoint_kwargs = staticmethod(rocket_formats.checkpoint_kwargs)

    def __init__(
        self,
        backbone: str = "efficientnet_b0.ra_in1k",
        hiddim: int = 1024,
        num_heads: int = 8,
        num_layers: int = 4,
        timesteps: int = 128,
        mem_len: int = 128,
        *,
        backbone_weights: str | Path | None = None,
        value_head: bool = False,
        nucleus_prob: float | None = 0.85,
        pooling_dropout: float = 0.1,
        checkpoint_backbone: bool = False,
        rebuild_activations: str = "products",
    ) -> None:
        super().__init__()
        for name, value in (("hiddim", hiddim), ("num_heads", num_heads), ("num_layers", num_layers)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"RocketPolicy {name}={value!r}; expected a positive integer")
        if not isinstance(mem_len, int) or mem_len < 1 or not isinstance(timesteps, int) or timesteps < 1:
            raise ConfigError(
                f"RocketPolicy timesteps={timesteps!r}, mem_len={mem_len!r}; expected integers >= 1"
            )
        if hiddim % num_heads:
            raise ConfigError(f"RocketPolicy hiddim={hiddim} is not divisible by num_heads={num_heads}")
        if nucleus_prob is not None and not 0 < nucleus_prob <= 1:
            raise ConfigError(f"RocketPolicy nucleus_prob={nucleus_prob}; expected a value in (0, 1] or None")
        self.config: dict[str, Any] = {
            "backbone": backbone,
            "hiddim": hiddim,
            "num_heads": num_heads,
            "num_layers": num_layers,
            "timesteps": timesteps,
            "mem_len": mem_len,
            "value_head": value_head,
            "nucleus_prob": nucleus_prob,
            "pooling_dropout": pooling_dropout,
        }
        self.backbone, mean, std = build_backbone(backbone, backbone_weights)
        # Frames arrive as (H, W, C); channels-last convolutions are also faster on CPU and GPU.
        self.backbone.to(memory_format=torch.channels_last)
        if checkpoint_backbone:
            checkpoint_stages(self.backbone, backbone)
        if rebuild_activations not in REBUILD:
            raise ConfigError(
                f"RocketPolicy rebuild_activations={rebuild_activations!r}; "
                f"expected one of {', '.join(REBUILD)}"
            )
        # Checkpointed stages keep no activations to rebuild (and own the saved-tensor hooks inside).
        self.rebuild_activations = "none" if checkpoint_backbone else rebuild_activations
        # Normalisation as one multiply-add per channel of the (RGB, mask) stack; the mask passes as is.
        scale, shift = 1.0 / (255.0 * torch.tensor(std)), -torch.tensor(mean) / torch.tensor(std)
        self.register_buffer("pixel_scale", torch.cat([scale, torch.ones(1)]), persistent=False)
        self.register_buffer("pixel_shift", torch.cat([shift, torch.zeros(1)]), persistent=False)
        self.updim = nn.Conv2d(self.backbone.feature_info[-1]["num_chs"], hiddim, kernel_size=1, bias=False)
        # It convolves the backbone's channels-last features, so its weight gradient comes out
        # channels-last: a contiguous weight made DDP warn "Grad strides do not match bucket view strides".
        self.updim.to(memory_format=torch.channels_last)
        self.pooling = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d_model=hiddim,
                nhead=num_heads,
                dim_feedforward=2 * hiddim,
                dropout=pooling_dropout,
                batch_first=True,
            ),
            num_layers=2,
            enable_nested_tensor=False,
        )
        self.interaction = nn.Embedding(N_INTERACTIONS, hiddim)
        self.recurrent = RecurrentBlocks(hiddim, num_heads, num_layers, mem_len)
        self.lastlayer = FanInLinear(hiddim, hiddim, 1.0, layer_norm=True, relu=True)
        self.final_ln = nn.LayerNorm(hiddim)
        self.pi_head = ActionHeads(hiddim)
        self.value_head = ValueHead(hiddim) if value_head else None
        # Eval mode without autograd runs a copy of the backbone with BatchNorm folded into the
        # convolutions (not a submodule: no state-dict keys, rebuilt when the weights change).
        self._folded_backbone = FoldedCopy()

    def train(self, mode: bool = True) -> RocketPolicy:
        self._folded_backbone.clear()
        return super().train(mode)

    @property
    def device(self) -> torch.device:
        return self.interaction.weight.device

    def initial_state(self, batch_size: int) -> list[torch.Tensor]:
        """Empty memory for ``batch_size`` sequences: 3 tensors (mask, keys, values) per layer."""
        return self.recurrent.initial_state(batch_size, self.device, self.interaction.weight.dtype)

    def _memory_shapes(self) -> list[tuple[int, ...]]:
        mem_len, dim = self.config["mem_len"], self.config["hiddim"]
        return [(1, mem_len), (mem_len, dim), (mem_len, dim)] * self.config["num_layers"]

    def encode_frames(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N,H,W,3) uint8 frames and (N,H,W) masks -> (N, hiddim) frame features."""
        stack = torch.cat([image, mask[..., None]], dim=-1).to(self.pixel_scale.dtype)
        # (N,H,W,4) permuted to (N,4,H,W) is already channels-last.
        x = torch.addcmul(self.pixel_shift, stack, self.pixel_scale).permute(0, 3, 1, 2)
        inference = not (self.training or torch.is_grad_enabled())
        backbone = self._folded_backbone.get(self.backbone) if inference else self.backbone
        # Nothing is kept for backward without autograd: no hooks on the inference path.
        with rebuilt_activations(self.rebuild_activations if torch.is_grad_enabled() else "none"):
            features = backbone(x)[-1]
        x = self.updim(features)
        return self.pooling(x.flatten(2).transpose(1, 2)).mean(dim=1)

    def forward(
        self, batch: Mapping[str, Any], memory: Sequence[torch.Tensor] | None = None
    ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        inputs = parse_batch(batch, self.device)
        b, t = inputs.image.shape[:2]
        memory = carried_memory(memory, b, self._memory_shapes(), self.initial_state, self.device)
        x = self.encode_frames(inputs.image.flatten(0, 1), inputs.mask.flatten(0, 1)).view(b, t, -1)
        cond = self.interaction(inputs.obj_id + 1)
        x, memory = self.recurrent(x, inputs.first, memory, cond)
        x = self.final_ln(self.lastlayer(F.relu(x)))
        outputs: dict[str, Any] = {"pi_logits": self.pi_head(x)}
        if self.value_head is not None:
            outputs["vpred"] = self.value_head(x)
        return outputs, [m.detach() for m in memory]

    def step_inputs(self, obs: Mapping[str, Any], single: bool) -> dict[str, Any]:
        """The condition of a step: ``obs['segment']`` (or ``'segmentation'``) {``obj_id``, ``obj_mask``}."""
        segment = obs.get("segment", obs.get("segmentation"))
        if segment is None:
            return {}
        return {"segment": {key: add_step_axis(segment[key], single) for key in ("obj_id", "obj_mask")}}

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` (with ``"name": "rocket"``) into ``directory``
        (atomically)."""
        checkpoint.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> RocketPolicy:
        """Load a directory written by ``save_pretrained`` (or by the reference library); offline."""
        return checkpoint.load_pretrained_dir(cls, directory, **overrides)
