"""Lightning callbacks for offline training: EMA weights, checkpoints, speed and the progress bar."""

from minetrain.offline.lightning_callbacks.ema import EMA
from minetrain.offline.lightning_callbacks.progress_bar import SparseMetricsProgressBar
from minetrain.offline.lightning_callbacks.smart_checkpoint import SmartCheckpointCallback
from minetrain.offline.lightning_callbacks.speed_monitor import SpeedMonitorCallback

__all__ = ["EMA", "SmartCheckpointCallback", "SparseMetricsProgressBar", "SpeedMonitorCallback"]
