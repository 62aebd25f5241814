"""Fine-tuning a small VPT with MineLightning and behaviour cloning: validation BC loss falls.

The synthetic episodes are stored at 32x32 and resized to 128x128, the frame size VPT saw.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import pytest
import torch

from minetrain.data import MineDataModule
from minetrain.data.synth import write_synthetic_dataset
from minetrain.models.vpt import load_vpt_policy
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback

WIN_LEN = 8
# The published architecture (group norms, clipped causal memory, temperature 2), narrowed.
SMALL_VPT = {
    "attention_heads": 2,
    "attention_mask_style": "clipped_causal",
    "attention_memory_size": 2 * WIN_LEN,
    "hidsize": 32,
    "img_shape": [128, 128, 3],
    "impala_chans": [2, 4, 4],
    "impala_kwargs": {"post_pool_groups": 1},
    "impala_width": 1,
    "init_norm_kwargs": {"batch_norm": False, "group_norm_groups": 1},
    "n_recurrence_layers": 1,
    "only_img_input": True,
    "pointwise_ratio": 4,
    "recurrence_type": "transformer",
    "timesteps": WIN_LEN,
    "use_pre_lstm_ln": False,
}


@pytest.mark.slow
def test_fine_tuning_a_small_vpt_lowers_validation_bc_loss(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    data = write_synthetic_dataset(tmp_path / "data", episodes=12, frames=48, size=32, seed=1)
    model_file = tmp_path / "small.model"
    model_file.write_bytes(
        pickle.dumps({"model": {"args": {"net": {"args": SMALL_VPT}, "pi_head_opts": {"temperature": 2.0}}}})
    )
    policy = load_vpt_policy(model_file)
    module = MineLightning(
        mine_policy=policy,
        callbacks=[BehaviorCloneCallback(weight=1.0)],
        learning_rate=1e-2,
        warmup_steps=5,
        weight_decay=0.0,
        log_freq=10,
    )
    datamodule = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(data)],
            frame_width=128,
            frame_height=128,
            win_len=WIN_LEN,
            enable_segment=False,
        ),
        batch_size=4,
        num_workers=0,
        split_ratio=0.75,
        shuffle_episodes=True,
        episode_continuous_batch=True,
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path / "run",
        accelerator="cpu",
        max_steps=30,
        limit_val_batches=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=1.0,
    )
    datamodule.setup("fit")
    assert next(iter(datamodule.train_dataloader()))["image"].shape[2:] == (128, 128, 3)
    start = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/bc/loss"]
    trainer.fit(module, datamodule=datamodule)
    end = trainer.validate(module, datamodule=datamodule, verbose=False)[0]["val/bc/loss"]
    # About 72.7 -> 46.3 (summed over the 8 frames of a window; uniform guessing is 72.5).
    assert end < 0.75 * start, (start, end)
