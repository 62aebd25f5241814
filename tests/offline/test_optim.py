"""AdamW groups (every parameter decayed, or weight matrices only), LR schedules and hyperparameters."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from run_training import TINY_POLICY

from minetrain.models import RocketPolicy
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback
from minetrain.offline.optim import build_scheduler, lr_factor, param_groups
from minetrain.offline.utils import convert_to_normal


def test_weight_decay_only_on_weight_matrices_on_request() -> None:
    policy = RocketPolicy(**TINY_POLICY, timesteps=8)
    decay, no_decay = param_groups(policy, 0.1, matrices_only=True)
    names = {id(p): n for n, p in policy.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert "backbone.conv_stem.weight" in decayed and "updim.weight" in decayed
    assert "pooling.layers.0.self_attn.in_proj_weight" in decayed
    assert "pooling.layers.0.linear1.weight" in decayed
    assert "interaction.weight" in kept  # embedding
    assert "final_ln.weight" in kept and "backbone.bn1.weight" in kept  # norms
    assert all(not n.endswith("bias") for n in decayed)
    assert any(n.endswith("b_nd") for n in kept)  # relative-position table
    assert all(p.ndim >= 2 for p in decay["params"])


def test_every_parameter_is_decayed_by_default_and_matrices_only_on_request() -> None:
    policy = RocketPolicy(**TINY_POLICY, timesteps=8)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    (group,) = param_groups(policy, 0.001)
    assert group["weight_decay"] == 0.001 and [id(p) for p in group["params"]] == [id(p) for p in trainable]
    decay, no_decay = param_groups(policy, 0.001, matrices_only=True)
    assert no_decay["weight_decay"] == 0.0 and id(policy.interaction.weight) in {
        id(p) for p in no_decay["params"]
    }
    assert len(decay["params"]) + len(no_decay["params"]) == len(trainable)

    module = MineLightning(policy, callbacks=[BehaviorCloneCallback()], weight_decay=0.001, warmup_steps=4)
    module.trainer = L.Trainer(logger=False, enable_progress_bar=False)
    optimizer = module.configure_optimizers()["optimizer"]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.001]


def test_resuming_with_the_other_weight_decay_grouping_is_one_error() -> None:
    from minetrain.errors import CheckpointError

    policy = RocketPolicy(**TINY_POLICY, timesteps=8)
    old = MineLightning(policy, callbacks=[BehaviorCloneCallback()], weight_decay_matrices_only=True)
    state = {"param_groups": [{"params": []}, {"params": []}], "state": {}}
    checkpoint = {"state_dict": old.state_dict(), "optimizer_states": [state]}
    old.on_load_checkpoint(checkpoint)
    new = MineLightning(policy, callbacks=[BehaviorCloneCallback()])
    with pytest.raises(CheckpointError, match=r"optim\.weight_decay_matrices_only=true"):
        new.on_load_checkpoint(checkpoint)


def test_fused_adamw_updates_like_the_default_and_is_this_runs_choice_on_resume() -> None:
    from minetrain.errors import ConfigError

    torch.manual_seed(0)
    policies = {fused: RocketPolicy(**TINY_POLICY, timesteps=8) for fused in (False, True)}
    policies[True].load_state_dict(policies[False].state_dict())
    modules, optimizers = {}, {}
    for fused, policy in policies.items():
        modules[fused] = MineLightning(policy, callbacks=[BehaviorCloneCallback()], fused_adamw=fused)
        modules[fused].trainer = L.Trainer(logger=False, enable_progress_bar=False)
        optimizers[fused] = modules[fused].configure_optimizers()["optimizer"]
    assert [g["fused"] for g in optimizers[True].param_groups] == [True]
    assert [g["fused"] for g in optimizers[False].param_groups] == [None]
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in policies[False].parameters()]
        for fused in (False, True):
            for param, grad in zip(policies[fused].parameters(), grads, strict=True):
                param.grad = grad.clone()
            optimizers[fused].step()
    # The same update up to float rounding: 3 steps at lr 1e-5 move a parameter by up to 3e-5, and the
    # two kernels agree to 1e-7 (measured: 6e-8), 1/300 of that.
    for a, b in zip(policies[False].parameters(), policies[True].parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-7)

    # A checkpoint keeps its run's flag with the optimizer state; the resuming run's setting wins.
    for written, resumed in ((False, True), (True, False)):
        state = optimizers[written].state_dict()
        checkpoint = {"state_dict": modules[resumed].state_dict(), "optimizer_states": [state]}
        modules[resumed].on_load_checkpoint(checkpoint)
        optimizers[resumed].load_state_dict(checkpoint["optimizer_states"][0])
        assert [g["fused"] for g in optimizers[resumed].param_groups] == [resumed or None]
    with pytest.raises(ConfigError, match="fused_adamw"):
        MineLightning(policies[False], callbacks=[BehaviorCloneCallback()], fused_adamw="yes")


def test_warmup_then_constant_or_cosine() -> None:
    constant = [
        lr_factor(s, warmup_steps=4, schedule="constant", total_steps=0, min_ratio=0.0) for s in range(7)
    ]
    assert constant == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    cosine = [lr_factor(s, warmup_steps=2, schedule="cosine", total_steps=6, min_ratio=0.1) for s in range(8)]
    assert cosine[:3] == [0.5, 1.0, 1.0]
    assert cosine[4] == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine[6] == pytest.approx(0.1) and cosine[7] == pytest.approx(0.1)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(
        optimizer, warmup_steps=4, schedule="constant", total_steps=float("inf"), min_ratio=0
    )
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0]
    restored = build_scheduler(optimizer, warmup_steps=4, schedule="constant", total_steps=0, min_ratio=0)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.last_epoch == scheduler.last_epoch


def test_hyperparameters_plain_and_complete() -> None:
    cfg = OmegaConf.create({"model": {"hiddim": 32}, "save_freq": "${model.hiddim}", "dirs": ["a", "b"]})
    plain = convert_to_normal(cfg)
    assert plain == {"model": {"hiddim": 32}, "save_freq": 32, "dirs": ["a", "b"]}
    assert type(plain["model"]) is dict and type(plain["dirs"]) is list
    module = MineLightning(
        RocketPolicy(**TINY_POLICY, timesteps=8),
        callbacks=[BehaviorCloneCallback(0.5)],
        hyperparameters=plain,
        learning_rate=4e-5,
        warmup_steps=2000,
    )
    assert module.hparams["save_freq"] == 32
    assert module.hparams["mine_lightning"]["learning_rate"] == 4e-5
    objectives = module.hparams["mine_lightning"]["objectives"]
    assert objectives == {"bc": {"class": "BehaviorCloneCallback", "weight": 0.5, "reduction": "sum"}}
