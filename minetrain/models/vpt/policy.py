"""OpenAI's VPT policy (Video PreTraining) as a minetrain policy: frames -> ImpalaCNN -> transformer
recurrence with clipped causal memory -> buttons (8641) / camera (121) action heads and a value head.

Parameter names match OpenAI's ``MinecraftAgentPolicy`` and MineStudio's ``VPTPolicy`` (``net.``,
``pi_head.``, ``value_head.``), so their weights load unchanged (see ``load.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from minetrain.errors import ConfigError
from minetrain.models import checkpoint as checkpoint_files
from minetrain.models.acting import StepActing
from minetrain.models.heads import ActionHeads, ValueHead
from minetrain.models.inputs import carried_memory, parse_frames
from minetrain.models.memory import FanInLinear
from minetrain.models.vpt.formats import recorded_kwargs
from minetrain.models.vpt.impala import ImageEncoder, dense_layer_norm
from minetrain.models.vpt.load import build_policy, load_vpt_files
from minetrain.models.vpt.transformer import RecurrentTransformer

# OpenAI's published foundation/BC/RL models (2x width): the defaults.
DEFAULT_INIT_NORM = {"batch_norm": False, "group_norm_groups": 1}
DEFAULT_IMPALA_KWARGS = {"post_pool_groups": 1}


class VPTNet(nn.Module):
    """The trunk (``net.`` in the published weights): frames and memory -> (B, T, hidsize) latents."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        hidsize = config["hidsize"]
        norm = config["init_norm_kwargs"]
        self.img_process = ImageEncoder(
            config["img_shape"],
            [int(config["impala_width"] * c) for c in config["impala_chans"]],
            hidsize,
            norm,
            config["first_conv_norm"],
            config["impala_kwargs"].get("post_pool_groups"),
            config["scale_input_img"],
        )
        self.pre_lstm_ln = nn.LayerNorm(hidsize) if config["use_pre_lstm_ln"] else None
        self.recurrent_layer = RecurrentTransformer(
            hidsize,
            config["attention_heads"],
            config["n_recurrence_layers"],
            config["attention_memory_size"] - config["timesteps"],
            residual=config["recurrence_is_residual"],
            pointwise=config["use_pointwise_layer"],
            pointwise_ratio=config["pointwise_ratio"],
            pointwise_activation=config["pointwise_use_activation"],
        )
        self.lastlayer = FanInLinear(hidsize, hidsize, 1.0, layer_norm=dense_layer_norm(norm), relu=True)
        self.final_ln = nn.LayerNorm(hidsize)

    def forward(
        self, image: torch.Tensor, first: torch.Tensor, memory: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, t = image.shape[:2]
        x = self.img_process(image.flatten(0, 1)).view(b, t, -1)
        if self.pre_lstm_ln is not None:
            x = self.pre_lstm_ln(x)
        x, memory = self.recurrent_layer(x, first, memory)
        return self.final_ln(self.lastlayer(F.relu(x))), memory


def _listify(value: Any) -> Any:
    """Tuples (as pickles and Hydra give them) as lists, so the config is plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): _listify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_listify(v) for v in value]
    return value


class VPTPolicy(StepActing, nn.Module):
    """The VPT policy.

    ``forward(batch, memory) -> (outputs, memory)``: ``batch["image"]`` (B,T,H,W,3) uint8 frames of
    ``img_shape`` (128x128 for the published models) and optionally ``batch["first"]`` (B,T) bool,
    True where an episode starts: memory before it is not attended to, also inside a window.
    ``outputs["pi_logits"]`` holds log-probabilities ``{"buttons": (B,T,8641), "camera": (B,T,121)}``,
    ``outputs["vpred"]`` (B,T,1) the value prediction in normalised units. Memory is a list of
    tensors, batch first, 3 per layer (validity mask, keys, values of the last
    ``attention_memory_size - timesteps`` steps), returned detached.

    The arguments are those of OpenAI's ``.model`` files (``policy_kwargs``) and default to the
    published 2x models; ``temperature`` divides the action logits (2 in the published models),
    ``nucleus_prob`` is the top-p mass ``get_action`` samples from (None: plain sampling, as the
    reference). Only the transformer recurrence with the clipped causal mask exists here, as in
    every published VPT model.

    ``checkpoint_cnn`` trades compute for memory in training: each down-sampling stack of the image
    encoder runs under activation checkpointing, so only the stack outputs are kept for backward
    and one stack's activations are recomputed at a time (``benchmarks/vpt_memory.py`` estimates
    the saving). Outputs and gradients are unchanged. A training setting, not part of the config.
    """

    policy_name = "vpt"
    # What ``model.compile`` compiles (``minetrain.models.compiled``): the image encoder, nine tenths
    # of the forward's time. The recurrence stays eager: its memory grows over the first windows,
    # and each new length would be a new graph.
    compile_parts: ClassVar[tuple[str, ...]] = ("net.img_process",)

    def __init__(
        self,
        hidsize: int = 2048,
        img_shape: Sequence[int] = (128, 128, 3),
        impala_width: int = 8,
        impala_chans: Sequence[int] = (16, 32, 32),
        attention_heads: int = 16,
        attention_memory_size: int = 256,
        timesteps: int = 128,
        n_recurrence_layers: int = 4,
        *,
        pointwise_ratio: int = 4,
        pointwise_use_activation: bool = False,
        use_pointwise_layer: bool = True,
        recurrence_is_residual: bool = True,
        use_pre_lstm_ln: bool = False,
        init_norm_kwargs: Mapping[str, Any] | None = None,
        impala_kwargs: Mapping[str, Any] | None = None,
        first_conv_norm: bool = False,
        scale_input_img: bool = True,
        temperature: float = 2.0,
        nucleus_prob: float | None = None,
        checkpoint_cnn: bool = False,
    ) -> None:
        super().__init__()
        config: dict[str, Any] = _listify(
            {
                "hidsize": hidsize,
                "img_shape": img_shape,
                "impala_width": impala_width,
                "impala_chans": impala_chans,
                "attention_heads": attention_heads,
                "attention_memory_size": attention_memory_size,
                "timesteps": timesteps,
                "n_recurrence_layers": n_recurrence_layers,
                "pointwise_ratio": pointwise_ratio,
                "pointwise_use_activation": pointwise_use_activation,
                "use_pointwise_layer": use_pointwise_layer,
                "recurrence_is_residual": recurrence_is_residual,
                "use_pre_lstm_ln": use_pre_lstm_ln,
                "init_norm_kwargs": DEFAULT_INIT_NORM if init_norm_kwargs is None else init_norm_kwargs,
                "impala_kwargs": DEFAULT_IMPALA_KWARGS if impala_kwargs is None else impala_kwargs,
                "first_conv_norm": first_conv_norm,
                "scale_input_img": scale_input_img,
                "temperature": float(temperature),
                "nucleus_prob": nucleus_prob,
            }
        )
        _check_config(config)
        self.config = config
        self.net = VPTNet(config)
        self.net.img_process.cnn.checkpoint_stacks = bool(checkpoint_cnn)
        self.pi_head = ActionHeads(hidsize, temperature=config["temperature"])
        self.value_head = ValueHead(hidsize)

    @property
    def device(self) -> torch.device:
        return self.net.final_ln.weight.device

    def initial_state(self, batch_size: int) -> list[torch.Tensor]:
        """Empty memory for ``batch_size`` sequences: 3 tensors (mask, keys, values) per layer."""
        return self.net.recurrent_layer.initial_state(batch_size, self.device, self.net.final_ln.weight.dtype)

    def forward(
        self, batch: Mapping[str, Any], memory: Sequence[torch.Tensor] | None = None
    ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        image, first = parse_frames(batch, self.device)
        b, _, h, w = image.shape[:4]
        expected = tuple(self.config["img_shape"][:2])
        if (h, w) != expected:
            raise ConfigError(
                f"batch['image'] frames are {h}x{w} but this VPT policy was built for "
                f"{expected[0]}x{expected[1]} (img_shape); resize the frames to that size (data frame size)"
            )
        shapes = self.net.recurrent_layer.memory_shapes()
        memory = carried_memory(memory, b, shapes, self.initial_state, self.device)
        x, memory = self.net(image, first, memory)
        outputs = {"pi_logits": self.pi_head(x), "vpred": self.value_head(x)}
        return outputs, [m.detach() for m in memory]

    @classmethod
    def from_config(
        cls,
        model_path: str | Path | None = None,
        weights_path: str | Path | None = None,
        **kwargs: Any,
    ) -> VPTPolicy:
        """The policy a config's ``model.*`` describe (``minetrain.models.registry.build_policy``):
        OpenAI's published ``model_path`` (.model) + ``weights_path`` (.weights, or a MineStudio .ckpt
        fine-tuned from it) via ``load_vpt_policy``, ``kwargs`` overriding (e.g. ``checkpoint_cnn``);
        or, without files, a randomly initialised policy of the architecture ``kwargs`` give."""
        if model_path is None and weights_path is None:
            return build_policy(cls, kwargs, "the config")
        if model_path is None or weights_path is None:
            given, lacking = (
                ("model_path", "weights_path") if weights_path is None else ("weights_path", "model_path")
            )
            raise ConfigError(
                f"VPTPolicy {given} is given without {lacking}: fine-tuning needs both the .model "
                "(architecture) and the .weights file; for a random policy give neither, only the "
                "architecture arguments"
            )
        return load_vpt_files(cls, model_path, weights_path, **kwargs)

    @staticmethod
    def checkpoint_kwargs(
        state_dict: Mapping[str, torch.Tensor], recorded: Mapping[str, Any], source: str
    ) -> dict[str, Any]:
        """Constructor arguments from what a checkpoint recorded: minetrain's flat config or MineStudio's
        Hub ``policy_kwargs`` (``minetrain.models.checkpoint``); a record without the architecture is a
        CheckpointError naming ``load_vpt_policy``."""
        return recorded_kwargs(recorded, source)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``config.json`` (with ``"name": "vpt"``) into ``directory``,
        each atomically."""
        checkpoint_files.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides: Any) -> VPTPolicy:
        """Load a directory written by ``save_pretrained`` or by MineStudio's ``VPTPolicy.save_pretrained``
        (its Hub layout), from local disk; ``overrides`` win over the recorded arguments."""
        return checkpoint_files.load_pretrained_dir(cls, directory, **overrides)


def load_vpt_policy(
    model_path: str | Path,
    weights_path: str | Path | None = None,
    *,
    weights_only: bool = True,
    **overrides: Any,
) -> VPTPolicy:
    """A ``VPTPolicy`` from OpenAI's or MineStudio's files, or from a ``save_pretrained`` directory
    (``minetrain.models.vpt.load.load_vpt_files``, which says what each argument may be)."""
    return load_vpt_files(VPTPolicy, model_path, weights_path, weights_only=weights_only, **overrides)


def _check_config(config: Mapping[str, Any]) -> None:
    """One clear line for a configuration the architecture cannot be built from."""
    ints = ("hidsize", "impala_width", "attention_heads", "attention_memory_size", "timesteps")
    for name in (*ints, "n_recurrence_layers", "pointwise_ratio"):
        value = config[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"VPTPolicy {name}={value!r}; expected a positive integer")
    if config["hidsize"] % config["attention_heads"]:
        raise ConfigError(
            f"VPTPolicy hidsize={config['hidsize']} is not divisible by "
            f"attention_heads={config['attention_heads']}"
        )
    if config["attention_memory_size"] <= config["timesteps"]:
        raise ConfigError(
            f"VPTPolicy attention_memory_size={config['attention_memory_size']} must exceed "
            f"timesteps={config['timesteps']}: the difference is the number of remembered steps"
        )
    shape = config["img_shape"]
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise ConfigError(f"VPTPolicy img_shape={shape!r}; expected [height, width, 3]")
    unknown = sorted(set(config["impala_kwargs"]) - {"post_pool_groups"})
    if unknown:
        raise ConfigError(f"VPTPolicy impala_kwargs has unsupported keys {unknown}; only post_pool_groups is")
    unknown = sorted(
        set(config["init_norm_kwargs"]) - {"batch_norm", "batch_norm_kwargs", "group_norm_groups"}
    )
    if unknown:
        raise ConfigError(
            f"VPTPolicy init_norm_kwargs has unsupported keys {unknown}; "
            "expected batch_norm, group_norm_groups"
        )
    nucleus = config["nucleus_prob"]
    if nucleus is not None and not 0 < nucleus <= 1:
        raise ConfigError(f"VPTPolicy nucleus_prob={nucleus}; expected a value in (0, 1] or None")
    if not config["temperature"] > 0:
        raise ConfigError(f"VPTPolicy temperature={config['temperature']}; expected a value > 0")
