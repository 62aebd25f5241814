"""A training step fed YUV batches gives the loss and gradients of one fed the RGB batches."""

import pytest
import torch

from minetrain.data import RawDataset
from minetrain.models import RocketPolicy
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback

TINY = dict(backbone="test_efficientnet", hiddim=16, num_heads=2, num_layers=2, timesteps=8, mem_len=8)


@pytest.mark.parametrize("size", [32, 16])
def test_a_training_step_on_yuv_batches_gives_the_rgb_loss(tiny_dataset, size):
    losses = {}
    for image_format in ("rgb", "yuv420"):
        data = RawDataset(
            tiny_dataset, frame_width=size, frame_height=size, win_len=8, image_format=image_format
        )
        batch = data.__getitems__([0, 1, 5])
        torch.manual_seed(0)
        module = MineLightning(RocketPolicy(**TINY), callbacks=[BehaviorCloneCallback(1.0)])
        module.train()
        torch.manual_seed(1)
        losses[image_format] = module._batch_step(batch, 0, "train")["loss"].item()
    assert losses["yuv420"] == pytest.approx(losses["rgb"], rel=1e-4)
