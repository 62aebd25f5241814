"""Print, as JSON, the train and val episodes the reference (MineStudio) puts in each split.

Run in the reference venv: ``python scripts/reference_split.py SEED SPLIT_RATIO DIR...``. Used by
tests/data/test_split_parity.py to check that minetrain holds out the same episodes.
"""

import json
import sys

from minestudio.data.minecraft.callbacks import (
    ActionKernelCallback,
    ImageKernelCallback,
    SegmentationKernelCallback,
)
from minestudio.data.minecraft.dataset_raw import RawDataset


def main() -> None:
    seed, ratio, dirs = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    result = {}
    callbacks = [ImageKernelCallback(), ActionKernelCallback(), SegmentationKernelCallback()]
    for split in ("train", "val"):
        dataset = RawDataset(
            dataset_dirs=dirs,
            modal_kernel_callbacks=callbacks,
            seed=seed,
            win_len=8,
            split=split,
            split_ratio=ratio,
            verbose=False,
            shuffle_episodes=True,
        )
        result[split] = [episode for episode, _, _ in dataset.episodes_with_items]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
