"""The one batch stacker: arrays and tensors stack, dicts recurse, strings stay per window."""

from __future__ import annotations

import numpy as np
import torch

from minetrain.data.batching import stack_windows


def test_stack_windows_arrays_tensors_dicts_and_strings() -> None:
    windows = [
        {
            "image": np.full((2, 3), i, np.uint8),
            "mask": torch.full((2,), i),
            "text": f"w{i}",
            "seg": {"id": [i]},
        }
        for i in range(3)
    ]
    batch = stack_windows(windows)
    assert isinstance(batch["image"], torch.Tensor) and batch["image"].shape == (3, 2, 3)
    assert batch["image"][2].eq(2).all()
    assert torch.equal(batch["mask"], torch.tensor([[0, 0], [1, 1], [2, 2]]))
    assert batch["text"] == ["w0", "w1", "w2"]
    assert batch["seg"] == {"id": [[0], [1], [2]]}
