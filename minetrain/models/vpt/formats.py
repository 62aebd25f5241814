"""What VPT checkpoints record, in each library's layout, as ``VPTPolicy`` constructor arguments.

OpenAI's ``.model`` files and MineStudio's Hub ``config.json`` nest the architecture under
``policy_kwargs`` (with the sampling ``temperature`` beside it); minetrain's ``config.json`` holds
the flat ``VPTPolicy`` arguments plus ``"name": "vpt"``. Both map to the flat form here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from minetrain.errors import CheckpointError

POLICY_NAME = "vpt"
# VPTPolicy arguments a policy_kwargs dict may carry under the same name.
ARCHITECTURE_KEYS = (
    "hidsize",
    "img_shape",
    "impala_width",
    "impala_chans",
    "attention_heads",
    "attention_memory_size",
    "timesteps",
    "n_recurrence_layers",
    "pointwise_ratio",
    "pointwise_use_activation",
    "use_pointwise_layer",
    "recurrence_is_residual",
    "use_pre_lstm_ln",
    "init_norm_kwargs",
    "impala_kwargs",
    "first_conv_norm",
    "scale_input_img",
)
SAMPLING_KEYS = ("temperature", "nucleus_prob")
# The config keys naming OpenAI's files (``VPTPolicy.from_config``), recorded by a run's config.
FILE_KEYS = ("model_path", "weights_path")
# Keys of the published policy_kwargs the network never reads (in OpenAI's code too).
UNUSED_KEYS = (
    "obs_processing_width",
    "only_img_input",
    "input_shape",
    "active_reward_monitors",
    "diff_mlp_embedding",
    "single_output",
)
# Values the published models use for options that only have one implementation here.
FIXED = {"recurrence_type": "transformer", "attention_mask_style": "clipped_causal", "img_statistics": None}


def config_from_policy_kwargs(
    policy_kwargs: Mapping[str, Any], sampling: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """Flat ``VPTPolicy`` arguments from a reference ``policy_kwargs`` dict and its head options."""
    if not isinstance(policy_kwargs, Mapping):
        raise CheckpointError(f"{source}: policy_kwargs is a {type(policy_kwargs).__name__}; expected a dict")
    for key, value in FIXED.items():
        if key in policy_kwargs and policy_kwargs[key] != value:
            raise CheckpointError(
                f"{source}: {key}={policy_kwargs[key]!r} is not supported; minetrain's VPTPolicy implements "
                f"{key}={value!r}, as every published VPT model uses"
            )
    known = set(ARCHITECTURE_KEYS) | set(UNUSED_KEYS) | set(FIXED)
    unknown = sorted(set(policy_kwargs) - known)
    if unknown:
        raise CheckpointError(
            f"{source}: policy_kwargs has keys VPTPolicy does not know: {', '.join(unknown)}; "
            "this is not a plain VPT model (a variant with extra modules?)"
        )
    config = {key: policy_kwargs[key] for key in ARCHITECTURE_KEYS if key in policy_kwargs}
    for key in SAMPLING_KEYS:
        if sampling.get(key) is not None:
            config[key] = float(sampling[key])
    return config


def config_from_json(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Flat arguments from a ``config.json``: minetrain's (flat, ``name``) or MineStudio's Hub layout."""
    if "policy_kwargs" in data:
        if data.get("action_space") is not None:
            raise CheckpointError(
                f"{source} uses a custom action_space; only the VPT buttons/camera space is supported"
            )
        return config_from_policy_kwargs(data["policy_kwargs"], data, source)
    name = data.get("name", POLICY_NAME)
    if name != POLICY_NAME:
        raise CheckpointError(f"{source} holds a {name!r} policy, not a VPT policy")
    allowed = set(ARCHITECTURE_KEYS) | set(SAMPLING_KEYS)
    unknown = sorted(set(data) - allowed - {"name"})
    if unknown:
        raise CheckpointError(f"{source} has keys VPTPolicy does not know: {', '.join(unknown)}")
    return {key: data[key] for key in allowed if key in data}


def reference_hub_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """MineStudio's Hub ``config.json`` for a ``VPTPolicy`` config: what its ``VPTPolicy.from_pretrained``
    passes to its constructor (``policy_kwargs``, the head's sampling options, no custom action space)."""
    return {
        "action_space": None,
        "policy_kwargs": {
            "recurrence_type": "transformer",
            "attention_mask_style": "clipped_causal",
            **{key: config[key] for key in ARCHITECTURE_KEYS if key in config},
        },
        **{key: config[key] for key in SAMPLING_KEYS if config.get(key) is not None},
    }


def recorded_kwargs(recorded: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``VPTPolicy`` arguments from what a checkpoint recorded: minetrain's flat config or MineStudio's Hub
    ``config.json``. A record without the architecture (a MineStudio ``.ckpt`` keeps only the weights; the
    attention heads cannot be read off them) is a CheckpointError saying how to open the file."""
    kept = {key: value for key, value in recorded.items() if key not in FILE_KEYS}
    if "policy_kwargs" not in kept and not set(kept) & set(ARCHITECTURE_KEYS):
        raise CheckpointError(
            f"{source} records no VPT architecture (only weights); open it with "
            f"minetrain.models.vpt.load_vpt_policy(<the .model file it was fine-tuned from>, {source!r})"
        )
    return config_from_json(kept, source)
