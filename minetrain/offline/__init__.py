"""Offline training: ``MineLightning``, objectives (``mine_callbacks``) and Lightning callbacks."""

from minetrain.offline.trainer import MineLightning

__all__ = ["MineLightning"]
