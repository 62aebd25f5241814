"""Training objectives for MineLightning, each an ``ObjectiveCallback``."""

from minetrain.offline.mine_callbacks.behavior_clone import BehaviorCloneCallback
from minetrain.offline.mine_callbacks.objective import ObjectiveCallback

__all__ = ["BehaviorCloneCallback", "ObjectiveCallback"]
