"""`minetrain pretrain` picks its policy by `model.name`: the name is checked, `model.*` are checked against
the selected class, the name ends up in the checkpoints, and the VPT configs run (on a stand-in policy
registered as `vpt`, so these tests do not depend on the VPT network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_pretrain_usage import TINY, one_error_line

from minetrain.data.store import TrajectoryStore
from minetrain.models import RocketPolicy, load_checkpoint, load_policy, registry

# The smallest run of the demo config: tiny model and frames, two steps, no worker processes.
ROCKET_RUN = [
    *TINY,
    "model.hiddim=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "trainer.max_steps=2",
    "logger=none",
]
# The VPT configs made tiny (frames, window, batch, one CPU process in fp32) for the stand-in policy.
VPT_TINY = [
    "data.frame_width=32",
    "data.frame_height=32",
    "data.win_len=8",
    "+model.timesteps=8",
    "+model.mem_len=8",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32",
    "trainer.strategy=auto",
    "trainer.max_steps=2",
    "logger=none",
]


class StandInVPT(RocketPolicy):
    """Registered as ``vpt`` in these tests: takes the VPT config's file arguments, runs a tiny ROCKET-1."""

    policy_name = "vpt"

    def __init__(
        self,
        model_path: str | None = None,
        weights_path: str | None = None,
        hiddim: int = 32,
        timesteps: int = 8,
        mem_len: int = 8,
    ) -> None:
        for path in (model_path, weights_path):
            assert path is None or Path(path).is_absolute(), "file arguments reach the policy absolute"
        super().__init__("test_efficientnet", hiddim, 2, 1, timesteps, mem_len)

    @staticmethod
    def checkpoint_kwargs(state_dict: dict, recorded: dict, source: str) -> dict:
        return {key: recorded[key] for key in ("hiddim", "timesteps", "mem_len")}


@pytest.fixture
def stand_in_vpt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.POLICIES, "vpt", f"{__name__}:StandInVPT")


@pytest.fixture
def vpt_files(tmp_path: Path) -> list[str]:
    """``model.model_path`` / ``model.weights_path`` overrides naming files relative to the cwd."""
    (tmp_path / "tiny.model").write_bytes(b"architecture")
    (tmp_path / "tiny.weights").write_bytes(b"weights")
    return ["model.model_path=tiny.model", "model.weights_path=tiny.weights"]


def _compose(name: str) -> dict:
    with initialize_config_module(config_module="minetrain.configs", version_base=None):
        return OmegaConf.to_container(compose(config_name=name), resolve=False)


def _run_dir(cwd: Path, name: str) -> Path:
    (run,) = (cwd / "outputs" / name).iterdir()
    return run


def test_vpt_configs_hold_the_tutorial_values():
    raw, event = _compose("vpt"), _compose("vpt_event")
    assert raw["model"] == {"name": "vpt", "model_path": None, "weights_path": None, "compile": False}
    data = raw["data"]
    assert (data["mode"], data["frame_width"], data["frame_height"], data["win_len"]) == (
        "raw",
        128,
        128,
        128,
    )
    assert (data["batch_size"], data["num_workers"], data["prefetch_factor"]) == (8, 8, 4)
    assert (data["split_ratio"], data["shuffle_episodes"], data["episode_continuous_batch"]) == (
        0.9,
        True,
        False,
    )
    assert data["enable_segment"] is False
    optim = raw["optim"]
    assert (optim["learning_rate"], optim["weight_decay"], optim["warmup_steps"]) == (0.00004, 0.000181, 2000)
    assert (raw["objective_weight"], raw["save_freq"]) == (0.01, 2000)
    trainer = raw["trainer"]
    assert (trainer["devices"], trainer["precision"], trainer["gradient_clip_val"]) == (8, "bf16-mixed", 1.0)
    assert event["model"] == raw["model"] and event["data"]["mode"] == "event"
    assert (event["data"]["event_regex"], event["data"]["bias"], event["data"]["min_nearby"]) == (
        "minecraft.kill_entity:.*",
        16,
        64,
    )
    assert (event["optim"]["warmup_steps"], event["save_freq"], event["data"]["win_len"]) == (500, 1000, 128)


@pytest.mark.slow
def test_explicit_model_name_rocket_trains_and_is_recorded(in_process, tmp_path: Path, eval_dataset: Path):
    args = ["pretrain", f"data.dataset_dirs=[{eval_dataset}]", "model.name=rocket", *ROCKET_RUN]
    assert in_process(args) == 0
    run = _run_dir(tmp_path, "cmds")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model"]["name"] == "rocket"
    assert ckpt["hyper_parameters"]["mine_lightning"]["policy"]["name"] == "rocket"
    loaded = load_checkpoint(run)
    assert loaded.policy_name == "rocket" and type(loaded.original) is RocketPolicy


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model.name=gpt"], ["model.name='gpt' is not a known policy", "rocket, vpt"]),
        (
            ["+model.model_path=x.model"],
            ["model.model_path is not an argument of RocketPolicy (model.name=rocket)"],
        ),
    ],
)
def test_model_name_and_keys_are_checked(in_process, capsys, eval_dataset: Path, overrides, named):
    code = in_process(["pretrain", f"data.dataset_dirs=[{eval_dataset}]", *ROCKET_RUN, *overrides])
    line = one_error_line(code, capsys.readouterr().err)
    assert all(part in line for part in named), line


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ([], ["model.name=vpt needs model.model_path and model.weights_path", "model.model_path=FILE"]),
        (
            ["model.model_path=nope.model", "model.weights_path=nope.weights"],
            ["model.model_path=nope.model does not exist"],
        ),
        (["+model.checkpoint_backbone=true"], ["model.checkpoint_backbone is not an argument of StandInVPT"]),
    ],
)
def test_vpt_config_asks_for_the_model_files(
    in_process, capsys, stand_in_vpt, eval_dataset: Path, overrides, named
):
    code = in_process(["pretrain", "--config-name", "vpt", f"data.dataset_dirs=[{eval_dataset}]", *overrides])
    line = one_error_line(code, capsys.readouterr().err)
    assert all(part in line for part in named), line


@pytest.mark.slow
def test_vpt_config_trains_and_evaluate_rollout_export_take_its_checkpoint(
    in_process, capsys, stand_in_vpt, vpt_files, tmp_path: Path, eval_dataset: Path
):
    args = ["pretrain", "--config-name", "vpt", f"data.dataset_dirs=[{eval_dataset}]", *vpt_files, *VPT_TINY]
    assert in_process(args) == 0
    out = capsys.readouterr().out
    assert f"model.model_path={tmp_path / 'tiny.model'}" in out
    run = _run_dir(tmp_path, "vpt")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    loaded = load_checkpoint(run)
    assert loaded.policy_name == "vpt" and type(loaded.original) is StandInVPT
    data = loaded.hyper_parameters["data"]
    assert data["frame_width"] == 32 and data["enable_segment"] is False

    # evaluate, rollout-preview and export take the other policy's checkpoints; the MineStudio formats
    # (RocketPolicy only) are refused in one line.
    assert in_process(["evaluate", str(run), str(eval_dataset), "--split", "all", "--batches", "1"]) == 0
    report = json.loads((tmp_path / "eval-last" / "report.json").read_text())
    assert report["policy"] == "vpt" and report["data"]["frame_width"] == 32
    episode = sorted(TrajectoryStore(eval_dataset).episodes)[0]
    clip = ["rollout-preview", str(run), str(eval_dataset), "--episode", episode, "--frames", "3"]
    assert in_process([*clip, "--out", "clip.mp4"]) == 0 and (tmp_path / "clip.mp4").is_file()
    assert in_process(["export", str(run), "exported"]) == 0
    assert type(load_policy(tmp_path / "exported")) is StandInVPT
    capsys.readouterr()
    code = in_process(["export", str(run), "ref.ckpt", "--format", "minestudio"])
    line = one_error_line(code, capsys.readouterr().err)
    assert "holds a 'vpt' policy" in line and "--format minetrain" in line


@pytest.mark.slow
def test_vpt_event_config_trains_on_kill_events(in_process, stand_in_vpt, vpt_files, tmp_path: Path):
    from minetrain.data.synth import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "events", episodes=4, frames=160, size=32, seed=3)
    assert in_process(["data", "index-events", str(data)]) == 0
    args = ["pretrain", "--config-name", "vpt_event", f"data.dataset_dirs=[{data}]", *vpt_files]
    assert in_process([*args, *VPT_TINY]) == 0
    run = _run_dir(tmp_path, "vpt_event")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    loaded = load_checkpoint(run)
    assert loaded.policy_name == "vpt"
    assert loaded.hyper_parameters["data"]["event_regex"] == "minecraft.kill_entity:.*"
