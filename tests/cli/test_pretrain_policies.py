"""`minetrain pretrain` picks its policy by `model.name`: the name is checked, `model.*` are checked against
the selected class, the name ends up in the checkpoints, and the VPT configs fine-tune a tiny VPTPolicy
from OpenAI-format files (or build one from architecture arguments), resume without those files, and
evaluate, export and rollout-preview take its checkpoints."""

from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_pretrain_usage import TINY, one_error_line

from minetrain.data.store import TrajectoryStore
from minetrain.models import RocketPolicy, VPTPolicy, load_checkpoint, load_policy

# The smallest run of the demo config: tiny model and frames, two steps, no worker processes.
ROCKET_RUN = [
    *TINY,
    "model.hiddim=32",
    "model.num_heads=2",
    "model.num_layers=1",
    "trainer.max_steps=2",
    "logger=none",
]
# A tiny VPT architecture for 32x32 frames and 8-step windows (VPTPolicy arguments).
TINY_VPT = {
    "hidsize": 8,
    "img_shape": [32, 32, 3],
    "impala_width": 1,
    "impala_chans": [2, 4, 4],
    "attention_heads": 2,
    "attention_memory_size": 16,
    "timesteps": 8,
    "n_recurrence_layers": 1,
}
# The VPT configs made tiny (frames, window, batch, one CPU process in fp32).
VPT_TINY = [
    "data.frame_width=32",
    "data.frame_height=32",
    "data.win_len=8",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.precision=32",
    "trainer.strategy=auto",
    "trainer.max_steps=2",
    "save_freq=2",
    "logger=none",
]


@pytest.fixture
def vpt_files(tmp_path: Path) -> tuple[VPTPolicy, list[str]]:
    """A tiny VPT written as OpenAI publishes its models (pickled kwargs in .model, a state dict in
    .weights) and the ``model.model_path`` / ``model.weights_path`` overrides naming them relative to
    the cwd."""
    torch.manual_seed(0)
    policy = VPTPolicy(**TINY_VPT)
    content = {"model": {"args": {"net": {"args": TINY_VPT}, "pi_head_opts": {"temperature": 2.0}}}}
    (tmp_path / "tiny.model").write_bytes(pickle.dumps(content))
    torch.save(policy.state_dict(), tmp_path / "tiny.weights")
    return policy, ["model.model_path=tiny.model", "model.weights_path=tiny.weights"]


def pasted(stdout: str, label: str) -> list[str]:
    """The printed ``label:`` command's arguments after ``minetrain``, as a shell splits them."""
    (line,) = [line for line in stdout.splitlines() if line.startswith(f"{label}:")]
    argv = shlex.split(line.removeprefix(f"{label}:"))
    assert argv[0] == "minetrain", line
    return argv[1:]


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
    # The tutorial keeps no EMA; ema.enabled=true opts in.
    assert raw["ema"]["enabled"] is False and event["ema"]["enabled"] is False
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
        (["model.model_path=tiny.model"], ["model.name=vpt needs model.weights_path"]),
        (
            ["model.model_path=nope.model", "model.weights_path=nope.weights"],
            ["model.model_path=nope.model does not exist"],
        ),
        (
            ["+model.checkpoint_backbone=true"],
            ["model.checkpoint_backbone is not an argument of VPTPolicy", "model.checkpoint_cnn"],
        ),
        (
            ["model.model_path=tiny.model", "+model.checkpoint_cnn=true"],
            ["VPTPolicy model_path is given without weights_path"],
        ),
        (
            ["model.model_path=tiny.model", "model.weights_path=tiny.weights", "data.frame_width=32"],
            ["takes 32x32 frames (its img_shape) but data.frame_height=128 data.frame_width=32"],
        ),
    ],
)
def test_vpt_config_asks_for_the_model_files(
    in_process, capsys, vpt_files, eval_dataset: Path, overrides, named
):
    code = in_process(["pretrain", "--config-name", "vpt", f"data.dataset_dirs=[{eval_dataset}]", *overrides])
    line = one_error_line(code, capsys.readouterr().err)
    assert all(part in line for part in named), line


@pytest.mark.slow
def test_vpt_config_fine_tunes_resumes_without_the_files_and_tools_take_its_checkpoint(
    in_process, capsys, monkeypatch, vpt_files, tmp_path: Path, eval_dataset: Path
):
    initial, files = vpt_files
    args = ["pretrain", "--config-name", "vpt", f"data.dataset_dirs=[{eval_dataset}]", *files, *VPT_TINY]
    assert in_process(args) == 0
    out = capsys.readouterr().out
    assert f"model.model_path={tmp_path / 'tiny.model'}" in out
    run = _run_dir(tmp_path, "vpt")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and "ema_state_dict" not in ckpt
    # Checkpoints record the architecture, not the files it was read from.
    assert ckpt["hyper_parameters"]["mine_lightning"]["policy"] == {"name": "vpt", "config": initial.config}
    loaded = load_checkpoint(run)
    assert type(loaded.original) is VPTPolicy and loaded.ema is None
    assert loaded.hyper_parameters["data"]["frame_width"] == 32
    # Fine-tuning started from the .weights (2 steps of warm-up barely move them).
    for key, value in initial.state_dict().items():
        assert torch.allclose(loaded.original.state_dict()[key], value, atol=1e-4), key

    # The printed commands, pasted in another directory after the OpenAI files are gone.
    (tmp_path / "tiny.model").unlink()
    (tmp_path / "tiny.weights").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert in_process(pasted(out, "Resume")) == 0
    second = capsys.readouterr().out
    resumed = _run_dir(elsewhere, "vpt")
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert in_process(pasted(second, "Evaluate")) == 0
    (report,) = elsewhere.glob("eval-*/report.json")
    assert json.loads(report.read_text())["policy"] == "vpt"
    export = pasted(second, "Export")
    assert "--ema" not in export and in_process(export) == 0
    assert type(load_policy(resumed / "export")) is VPTPolicy

    # rollout-preview and export --format minetrain take the checkpoint; the MineStudio export format
    # (RocketPolicy only) is refused in one line.
    episode = sorted(TrajectoryStore(eval_dataset).episodes)[0]
    clip = ["rollout-preview", str(run), str(eval_dataset), "--episode", episode, "--frames", "3"]
    assert in_process([*clip, "--out", "clip.mp4"]) == 0 and (elsewhere / "clip.mp4").is_file()
    assert in_process(["export", str(run), "exported", "--format", "minetrain"]) == 0
    exported = load_policy(elsewhere / "exported")
    assert type(exported) is VPTPolicy and exported.config == initial.config
    capsys.readouterr()
    code = in_process(["export", str(run), "ref.ckpt", "--format", "minestudio"])
    line = one_error_line(code, capsys.readouterr().err)
    assert "holds a 'vpt' policy" in line and "--format minetrain" in line


@pytest.mark.slow
def test_vpt_event_config_trains_a_random_vpt_on_kill_events(in_process, tmp_path: Path):
    from minetrain.data.synth import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "events", episodes=4, frames=160, size=32, seed=3)
    assert in_process(["data", "index-events", str(data)]) == 0
    architecture = [f"+model.{key}={value}".replace(" ", "") for key, value in TINY_VPT.items()]
    args = ["pretrain", "--config-name", "vpt_event", f"data.dataset_dirs=[{data}]", *architecture]
    assert in_process([*args, *VPT_TINY]) == 0
    run = _run_dir(tmp_path, "vpt_event")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    loaded = load_checkpoint(run)
    assert type(loaded.original) is VPTPolicy and loaded.original.config["hidsize"] == 8
    assert loaded.hyper_parameters["data"]["event_regex"] == "minecraft.kill_entity:.*"
