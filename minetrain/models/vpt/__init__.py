"""OpenAI's VPT policy and loaders for its published weights and MineStudio's checkpoints."""

from minetrain.models.vpt.policy import VPTPolicy, load_vpt_policy

__all__ = ["VPTPolicy", "load_vpt_policy"]
