"""``model.compile``: a compiled policy trains like the eager one and its checkpoints are the same files.

The backend is ``aot_eager``: it traces forward and backward into graphs as inductor does, but runs
torch's own kernels, so a few steps compile in about 20 s on 2 cores. inductor itself (the default
on GPU) took about 300 s to compile the same tiny policy on this machine's CPU, too long for CI; its
3-step loss differed from eager by 7e-8 relative when measured by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch._dynamo.utils import counters

from minetrain.data import MineDataModule
from minetrain.models import RocketPolicy
from minetrain.models.checkpoint import EMA_STATE_KEY
from minetrain.models.compiled import compile_policy
from minetrain.offline import MineLightning
from minetrain.offline.lightning_callbacks import EMA, SmartCheckpointCallback
from minetrain.offline.mine_callbacks import BehaviorCloneCallback

TINY_MODEL = dict(backbone="test_efficientnet", hiddim=32, num_heads=2, num_layers=1, timesteps=8, mem_len=8)
# Equal up to float rounding: aot_eager runs the eager kernels, only in the order of its traced graph
# (measured: bit-identical here); 1e-5 relative leaves room for a reordered reduction and nothing more.
RTOL = 1e-5


class Losses(L.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, outputs: Any, *args: Any) -> None:
        self.values.append(float(outputs["loss"]))


def fit(
    dataset: Path, out: Path, backend: str | None, steps: int, ckpt_path: Path | None = None
) -> list[float]:
    torch.manual_seed(0)
    # No dropout: inductor draws its masks with its own generator, so they differ from eager ones.
    policy = RocketPolicy(**TINY_MODEL, pooling_dropout=0.0)
    if backend is not None:
        compile_policy(policy, backend)
    module = MineLightning(
        mine_policy=policy, callbacks=[BehaviorCloneCallback()], learning_rate=1e-3, warmup_steps=0, seed=0
    )
    data = MineDataModule(
        data_params=dict(
            mode="raw",
            dataset_dirs=[str(dataset)],
            frame_width=32,
            frame_height=32,
            win_len=8,
            enable_segment=True,
        ),
        batch_size=2,
        split_ratio=0.75,
        episode_continuous_batch=True,
    )
    losses = Losses()
    checkpoints = SmartCheckpointCallback(
        dirpath=out, filename="ckpt-{step}", save_top_k=-1, every_n_train_steps=3, save_weights_only=False
    )
    trainer = L.Trainer(
        default_root_dir=out,
        logger=False,
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,
        callbacks=[EMA(decay=0.5, every_n_steps=1), checkpoints, losses],
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return losses.values


@pytest.mark.slow
def test_compiled_policy_trains_resumes_and_saves_like_the_eager_one(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    counters.clear()
    compiled = fit(tiny_dataset, tmp_path / "compiled", "aot_eager", steps=3)
    assert counters["stats"]["unique_graphs"] >= 3, "the backbone, pooling and blocks were not compiled"
    eager = fit(tiny_dataset, tmp_path / "eager", None, steps=3)
    assert compiled == pytest.approx(eager, rel=RTOL)

    # The same checkpoint: parameter names as without compiling, the same EMA weights.
    saved = {
        name: torch.load(tmp_path / name / "ckpt-step=3.ckpt", map_location="cpu", weights_only=False)
        for name in ("compiled", "eager")
    }
    for key in ("state_dict", EMA_STATE_KEY):
        assert saved["compiled"][key].keys() == saved["eager"][key].keys()
        assert not any("_orig_mod" in name for name in saved["compiled"][key])
        for name, value in saved["eager"][key].items():
            torch.testing.assert_close(saved["compiled"][key][name], value, rtol=RTOL, atol=1e-7)

    # Resuming a compiled run from its checkpoint continues as the eager run resumed from its own.
    resumed = {
        name: fit(
            tiny_dataset, tmp_path / f"{name}-resumed", backend, 5, tmp_path / name / "ckpt-step=3.ckpt"
        )
        for name, backend in (("compiled", "aot_eager"), ("eager", None))
    }
    assert len(resumed["compiled"]) == 2
    assert resumed["compiled"] == pytest.approx(resumed["eager"], rel=RTOL)
