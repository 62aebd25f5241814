"""The training step does not wait for the device beyond logging and the non-finite loss check.

A CUDA run would show such waits with ``torch.cuda.set_sync_debug_mode``; on CPU the reads that
cause them are caught by name instead: ``Tensor.item``, ``.tolist``, ``.cpu``, ``.numpy``,
``.nonzero`` and the conversions to bool, int and float, from the start of each training batch to
the end of its callbacks (forward, loss, backward, clipping, optimizer, EMA, speed monitor, loss
summary, progress bar), in the pretrain CLI's Lightning setup.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module

from minetrain.cli.pretrain import build_training
from minetrain.errors import ConfigError
from minetrain.models.inputs import parse_batch
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback

READS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__")
STEPS, LOG_FREQ = 8, 4
# Reads a step may make, by the function making them: the loss check once per step; logging every
# LOG_FREQ steps (the progress bar also once at the start); the interaction-type check only on host
# tensors (here, CPU training; a GPU batch is checked before it is moved, see the test below).
PER_STEP = {"_check_finite": 1}
LOGGING = ("_log_train_metrics", "get_metrics")
HOST_ONLY = ("check_interaction_ids",)


class Watch(L.Callback):
    """Records every read of a tensor value between ``on_train_batch_start`` and the last callback's
    ``on_train_batch_end`` (this callback opens the window first and a second instance closes it)."""

    def __init__(self, reads: list[list[traceback.FrameSummary]], opens: bool) -> None:
        self.reads, self.opens = reads, opens

    def on_train_batch_start(self, *args: object) -> None:
        if self.opens:
            Watch.active = True

    def on_train_batch_end(self, *args: object) -> None:
        if not self.opens:
            Watch.active = False

    active = False


@pytest.fixture
def recorded_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[traceback.FrameSummary]]]:
    reads: list[list[traceback.FrameSummary]] = []
    for name in READS:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: object, _original=original, **kwargs: object) -> object:
            if Watch.active:
                reads.append(traceback.extract_stack()[:-1])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)
    yield reads
    Watch.active = False


def _reader(stack: list[traceback.FrameSummary]) -> str:
    """The function a read is attributed to: the innermost one of minetrain's or of the allowed lists."""
    names = [frame.name for frame in stack]
    for frame in reversed(stack):
        if frame.name in (*PER_STEP, *LOGGING, *HOST_ONLY):
            return frame.name
    # AdamW's step counters live on the host (torch's default, non-capturable optimizers).
    if names[-1] == "_get_value" and stack[-1].filename.endswith("optim/optimizer.py"):
        return "optimizer step counter"
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(stack[-6:]))


def test_training_step_reads_nothing_from_the_device_beyond_logging(
    tiny_dataset: Path, tmp_path: Path, recorded_reads: list
) -> None:
    overrides = [
        f"data.dataset_dirs=[{tiny_dataset}]",
        "data.frame_width=32",
        "data.frame_height=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.split_ratio=0.75",
        "model.timesteps=8",
        "model.mem_len=8",
        "model.hiddim=32",
        "model.num_layers=1",
        "model.num_heads=2",
        f"optim.log_freq={LOG_FREQ}",
        "ema.every_n_steps=1",
        "save_freq=100",
        "logger=none",
    ]
    with initialize_config_module(config_module="minetrain.configs", version_base=None):
        cfg = compose(config_name="pretrain", overrides=overrides)
    module, datamodule, callbacks, _ = build_training(cfg, tmp_path)
    trainer = L.Trainer(
        logger=False,
        callbacks=[Watch(recorded_reads, opens=True), *callbacks, Watch(recorded_reads, opens=False)],
        use_distributed_sampler=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        max_steps=STEPS,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == STEPS
    counts: dict[str, int] = {}
    for stack in recorded_reads:
        reader = _reader(stack)
        counts[reader] = counts.get(reader, 0) + 1
    counts.pop("optimizer step counter", None)
    for name in HOST_ONLY:
        counts.pop(name, None)
    for name, per_step in PER_STEP.items():
        assert counts.pop(name, 0) == per_step * STEPS, name
    for name in LOGGING:
        assert counts.pop(name, 0) <= STEPS // LOG_FREQ + 1, name
    assert not counts, f"reads of device values in the training step: {counts}"


def test_interaction_types_are_checked_on_the_host_only() -> None:
    # Reading a meta tensor's values raises: parse_batch must not read a device batch's values...
    shape = (1, 2, 4, 4)
    batch = {
        "image": torch.empty(*shape, 3, dtype=torch.uint8, device="meta"),
        "segment": {
            "obj_id": torch.empty(*shape[:2], dtype=torch.long, device="meta"),
            "obj_mask": torch.empty(shape, dtype=torch.uint8, device="meta"),
        },
    }
    assert parse_batch(batch, torch.device("meta")).obj_id.device.type == "meta"
    # ... which MineLightning checks before the batch is moved to the device.
    from minetrain.models import RocketPolicy

    policy = RocketPolicy(backbone="test_efficientnet", hiddim=32, num_heads=2, num_layers=1, timesteps=2)
    module = MineLightning(policy, [BehaviorCloneCallback()])
    host = {"segment": {"obj_id": torch.full((1, 2), 9), "obj_mask": torch.zeros(shape, dtype=torch.uint8)}}
    with pytest.raises(ConfigError, match=r"obj_id'\] has values in \[9, 9\]"):
        module.on_before_batch_transfer(host, 0)
