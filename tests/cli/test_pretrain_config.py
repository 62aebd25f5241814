"""The `rocket1` config holds the seed tutorial's values; the demo config is small and CPU-only."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from minetrain.cli.pretrain import TRAINER_OWN
from minetrain.cli.pretrain_config import check_config
from minetrain.cli.pretrain_data import dataset_dirs
from minetrain.cli.pretrain_run import latest_checkpoint, resolve_ckpt_path
from minetrain.errors import ConfigError


def compose_config(name: str, overrides: list[str] | None = None):
    with initialize_config_module(config_module="minetrain.configs", version_base=None):
        return compose(config_name=name, overrides=overrides or [])


def test_rocket1_has_every_seed_value():
    cfg = compose_config("rocket1", ["data.dataset_dirs=[/data/6xx,/data/7xx]"])
    assert OmegaConf.to_container(cfg.model) == dict(
        name="rocket",
        backbone="efficientnet_b0.ra_in1k",
        hiddim=1024,
        num_heads=8,
        num_layers=4,
        timesteps=128,
        mem_len=128,
        compile=False,  # a training setting (torch.compile), off by default
    )
    assert (cfg.optim.log_freq, cfg.optim.learning_rate, cfg.optim.weight_decay, cfg.optim.warmup_steps) == (
        20,
        0.00004,
        0.001,
        2000,
    )
    data = cfg.data
    assert data.mode == "raw" and list(data.dataset_dirs) == ["/data/6xx", "/data/7xx"]
    assert (data.frame_width, data.frame_height, data.win_len, data.enable_segment) == (224, 224, 128, True)
    assert (data.batch_size, data.num_workers, data.prefetch_factor) == (8, 8, 4)
    assert (data.split_ratio, data.shuffle_episodes, data.episode_continuous_batch) == (0.95, True, True)
    assert OmegaConf.to_container(cfg.ema) == dict(
        enabled=True,
        decay=0.999,
        validate_original_weights=True,
        every_n_steps=8,
        cpu_offload=False,
        first_update="blend",
    )
    # The reference's loss scale, weight decay on every parameter and EMA start.
    assert cfg.objective_weight == 0.01 and cfg.objective_reduction == "sum"
    assert cfg.optim.weight_decay_matrices_only is False
    assert cfg.optim.fused_adamw is False  # the reference's multi-tensor AdamW
    trainer = cfg.trainer
    assert (trainer.devices, trainer.precision, trainer.strategy) == (
        8,
        "bf16-mixed",
        "ddp_find_unused_parameters_true",
    )
    assert trainer.gradient_clip_val == 1.0 and cfg.ckpt_path is None


def test_rocket1_requires_dataset_dirs():
    cfg = compose_config("rocket1")
    with pytest.raises(ConfigError, match=r"data.dataset_dirs=\[DIR"):
        dataset_dirs(cfg)


def test_unknown_key_is_rejected():
    with pytest.raises(Exception, match="no_such_key"):
        compose_config("pretrain", ["model.no_such_key=3"])


def test_model_compile_takes_true_false_or_a_backend_name():
    for value in ("true", "false", "aot_eager", "inductor"):
        check_config(compose_config("pretrain", [f"model.compile={value}"]), TRAINER_OWN)
    with pytest.raises(ConfigError, match=r"model.compile='fast' is not true, false or a torch.compile"):
        check_config(compose_config("pretrain", ["model.compile=fast"]), TRAINER_OWN)


def test_demo_is_small_and_on_cpu():
    cfg = compose_config("pretrain")
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
    assert cfg.model.backbone == "test_efficientnet" and cfg.data.dataset_dirs == []
    assert cfg.data.win_len == cfg.model.timesteps


def test_resume_auto_takes_the_newest_checkpoint(tmp_path: Path):
    import os

    old = tmp_path / "2026-01-01_00-00-00" / "checkpoints" / "ckpt-epoch=0-step=10.ckpt"
    new = tmp_path / "2026-01-02_00-00-00" / "checkpoints" / "ckpt-epoch=0-step=20.ckpt"
    ema = new.with_name("ckpt-epoch=0-step=20-EMA.ckpt")
    for i, path in enumerate((old, new, ema)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        os.utime(path, (1000 + i, 1000 + i))
    assert latest_checkpoint(tmp_path) == new
    run_dir = tmp_path / "2026-01-03_00-00-00"
    cfg = OmegaConf.create({"ckpt_path": None, "resume": "auto"})
    assert resolve_ckpt_path(cfg, run_dir) == str(new)
    with pytest.raises(ConfigError, match="resume"):
        resolve_ckpt_path(OmegaConf.create({"ckpt_path": None, "resume": "yes"}), run_dir)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_ckpt_path(
            OmegaConf.create({"ckpt_path": str(tmp_path / "nope.ckpt"), "resume": None}), run_dir
        )
