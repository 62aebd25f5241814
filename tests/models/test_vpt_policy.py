"""VPTPolicy behaviour: memory semantics, streaming actions, training settings and clear errors."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from minetrain.errors import CheckpointError, ConfigError, UnsafeDataError
from minetrain.models import build_policy
from minetrain.models.heads import ActionHeads
from minetrain.models.vpt import VPTPolicy, load_vpt_policy
from minetrain.models.vpt.formats import config_from_json, reference_hub_config
from minetrain.models.vpt.impala import DownStack, FanInConv, MaxPoolCompactIndices, ResidualBlock

TOL = 1e-5
TINY = {
    "hidsize": 8,
    "img_shape": [16, 16, 3],
    "impala_width": 1,
    "impala_chans": [2, 4, 4],
    "attention_heads": 2,
    "attention_memory_size": 14,
    "timesteps": 8,
    "n_recurrence_layers": 2,
}
TINY_KWARGS = {**TINY, "recurrence_type": "transformer", "only_img_input": True}


@pytest.fixture
def tiny() -> VPTPolicy:
    torch.manual_seed(0)
    return VPTPolicy(**TINY).eval()


def frames(b: int, t: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 16, 16, 3), dtype=torch.uint8, generator=gen)


def write_model_file(path, policy_kwargs, temperature=2.0):
    content = {
        "model": {"args": {"net": {"args": policy_kwargs}, "pi_head_opts": {"temperature": temperature}}}
    }
    path.write_bytes(pickle.dumps(content))
    return path


def test_streaming_with_resets_equals_whole_window(tiny):
    image = frames(2, 24)
    first = torch.zeros(2, 24, dtype=torch.bool)
    first[0, 13] = True
    with torch.no_grad():
        whole, whole_memory = tiny({"image": image, "first": first})
        memory, parts = None, []
        for start in range(0, 24, 5):
            stop = start + 5
            out, memory = tiny({"image": image[:, start:stop], "first": first[:, start:stop]}, memory)
            parts.append(out["pi_logits"]["buttons"])
    assert (torch.cat(parts, dim=1) - whole["pi_logits"]["buttons"]).abs().max() <= TOL
    for a, b in zip(memory, whole_memory, strict=True):
        assert (a.float() - b.float()).abs().max() <= TOL


def test_first_flag_forgets_everything_before_it(tiny):
    image = frames(1, 12)
    first = torch.zeros(1, 12, dtype=torch.bool)
    first[0, 5] = True
    with torch.no_grad():
        out, _ = tiny({"image": image, "first": first})
        fresh, _ = tiny({"image": image[:, 5:]})
        carried, _ = tiny({"image": image})
    for key in ("buttons", "camera"):
        assert (out["pi_logits"][key][:, 5:] - fresh["pi_logits"][key]).abs().max() <= TOL
    assert (carried["pi_logits"]["buttons"][:, 5:] - fresh["pi_logits"]["buttons"]).abs().max() > 1e-4


def test_outputs_memory_and_heads_follow_the_policy_contract(tiny):
    out, memory = tiny({"image": frames(3, 8)})
    assert out["pi_logits"]["buttons"].shape == (3, 8, 8641)
    assert out["pi_logits"]["camera"].shape == (3, 8, 121)
    assert out["vpred"].shape == (3, 8, 1)
    assert torch.allclose(out["pi_logits"]["camera"].exp().sum(-1), torch.ones(3, 8))
    assert len(memory) == 6 and all(m.shape[0] == 3 and not m.requires_grad for m in memory)
    assert [m.shape[1:] for m in tiny.initial_state(3)] == [m.shape[1:] for m in memory]
    assert isinstance(tiny.pi_head, ActionHeads) and tiny.policy_name == "vpt"
    # The reference's layout: actions (B,T,1), log-probabilities (B,T,1,C).
    actions = {"buttons": torch.zeros(3, 8, 1, dtype=torch.long), "camera": torch.full((3, 8, 1), 60)}
    logits = {key: value[..., None, :] for key, value in out["pi_logits"].items()}
    assert tiny.pi_head.logprob(actions, logits).shape == (3, 8)
    assert tiny.pi_head.entropy(logits).shape == (3, 8)


def test_temperature_divides_the_logits():
    torch.manual_seed(0)
    hot = VPTPolicy(**TINY, temperature=2.0).eval()
    cold = VPTPolicy(**TINY, temperature=1.0).eval()
    cold.load_state_dict(hot.state_dict())
    with torch.no_grad():
        x = torch.randn(2, 8)
        expected = torch.log_softmax(cold.pi_head["camera"].linear_layer(x) / 2, dim=-1)
        assert torch.allclose(hot.pi_head["camera"](x), expected, atol=1e-6)


def test_get_action_streams_env_actions(tiny):
    one, memory = tiny.get_action({"image": np.zeros((16, 16, 3), np.uint8), "first": True}, None)
    assert set(one) >= {"camera", "attack", "forward"} and np.asarray(one["camera"]).shape == (2,)
    _, memory = tiny.get_action({"image": np.zeros((16, 16, 3), np.uint8)}, [m[0:1] for m in memory])
    many, _ = tiny.get_action({"image": np.zeros((4, 16, 16, 3), np.uint8)}, None, deterministic=True)
    assert np.asarray(many["camera"]).shape == (4, 2)


def test_checkpointed_image_encoder_gives_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = VPTPolicy(**TINY).train()
    saving = VPTPolicy(**TINY, checkpoint_cnn=True).train()
    saving.load_state_dict(plain.state_dict())
    assert "checkpoint_cnn" not in saving.config
    batch = {"image": frames(2, 8)}
    for model in (plain, saving):
        out, _ = model(batch)
        (
            out["pi_logits"]["buttons"].logsumexp(-1).sum()
            + out["vpred"].sum()
            + out["pi_logits"]["camera"][..., 0].sum()
        ).backward()
    for (name, a), b in zip(plain.named_parameters(), saving.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_bf16_autocast_forward_runs(tiny):
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        out, memory = tiny({"image": frames(1, 8)})
        out, _ = tiny({"image": frames(1, 8, seed=1)}, memory)
    assert out["pi_logits"]["buttons"].dtype == torch.float32
    assert torch.isfinite(out["pi_logits"]["buttons"]).all()


def test_bad_inputs_are_one_line_config_errors(tiny):
    with pytest.raises(ConfigError, match=r"frames are 32x32 but this VPT policy was built for 16x16"):
        tiny({"image": torch.zeros(1, 2, 32, 32, 3, dtype=torch.uint8)})
    with pytest.raises(ConfigError, match=r"batch\['first'\] is \(1, 3\)"):
        tiny({"image": frames(1, 2), "first": torch.zeros(1, 3, dtype=torch.bool)})
    with pytest.raises(ConfigError, match=r"memory\[0\] is for batch size 2"):
        tiny({"image": frames(1, 2)}, tiny.initial_state(2))
    with pytest.raises(ConfigError, match=r"attention_memory_size=8 must exceed timesteps=8"):
        VPTPolicy(**{**TINY, "attention_memory_size": 8})
    with pytest.raises(ConfigError, match=r"impala_kwargs has unsupported keys \['goal_dim'\]"):
        VPTPolicy(**TINY, impala_kwargs={"post_pool_groups": 1, "goal_dim": 4})


def test_weights_with_unknown_or_missing_keys_are_named(tiny, tmp_path):
    model_file = write_model_file(tmp_path / "tiny.model", TINY_KWARGS)
    weights = dict(tiny.state_dict())
    weights["net.extra.weight"] = torch.zeros(1)
    del weights["net.final_ln.bias"]
    torch.save(weights, tmp_path / "bad.weights")
    with pytest.raises(CheckpointError) as caught:
        load_vpt_policy(model_file, tmp_path / "bad.weights")
    message = str(caught.value)
    assert "\n" not in message and "bad.weights" in message
    assert "missing keys: net.final_ln.bias" in message and "unexpected keys: net.extra.weight" in message


def test_weights_of_another_width_name_the_mismatch(tiny, tmp_path):
    model_file = write_model_file(tmp_path / "wide.model", {**TINY_KWARGS, "hidsize": 16})
    torch.save(tiny.state_dict(), tmp_path / "tiny.weights")
    with pytest.raises(CheckpointError, match=r"shape mismatches: .*pass the \.model file"):
        load_vpt_policy(model_file, tmp_path / "tiny.weights")


def test_model_files_that_are_not_plain_vpt_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"recurrence_type='multi_layer_lstm' is not supported"):
        load_vpt_policy(
            write_model_file(tmp_path / "a.model", {**TINY_KWARGS, "recurrence_type": "multi_layer_lstm"})
        )
    with pytest.raises(CheckpointError, match=r"keys VPTPolicy does not know: condition_embedding"):
        load_vpt_policy(write_model_file(tmp_path / "b.model", {**TINY_KWARGS, "condition_embedding": {}}))
    (tmp_path / "c.model").write_bytes(pickle.dumps({"weights": 1}))
    with pytest.raises(CheckpointError, match=r"c\.model is not a VPT \.model file"):
        load_vpt_policy(tmp_path / "c.model")
    (tmp_path / "d.model").write_bytes(pickle.dumps(os.system))
    with pytest.raises(UnsafeDataError, match=r"d\.model"):
        load_vpt_policy(tmp_path / "d.model")
    with pytest.raises(CheckpointError, match=r"holds weights, not the architecture"):
        torch.save({}, tmp_path / "e.ckpt")
        load_vpt_policy(tmp_path / "e.ckpt")
    with pytest.raises(CheckpointError, match=r"does not exist"):
        load_vpt_policy(tmp_path / "missing.model")


def test_model_file_without_weights_is_a_fresh_policy(tmp_path):
    model = load_vpt_policy(write_model_file(tmp_path / "tiny.model", TINY_KWARGS, temperature=1.5))
    assert model.config["temperature"] == 1.5 and model.config["hidsize"] == 8
    assert model.config["img_shape"] == [16, 16, 3]


def test_build_policy_from_config_loads_the_files_or_builds_the_architecture(tiny, tmp_path):
    model_file = write_model_file(tmp_path / "tiny.model", TINY_KWARGS)
    torch.save(tiny.state_dict(), tmp_path / "tiny.weights")
    loaded = build_policy(
        "vpt", model_path=model_file, weights_path=tmp_path / "tiny.weights", checkpoint_cnn=True
    )
    assert type(loaded) is VPTPolicy and loaded.config == tiny.config
    assert loaded.net.img_process.cnn.checkpoint_stacks
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert build_policy("vpt", **TINY).config == tiny.config
    with pytest.raises(ConfigError, match="weights_path is given without model_path"):
        build_policy("vpt", weights_path=tmp_path / "tiny.weights")


def test_reference_hub_config_round_trips(tiny):
    # MineStudio's VPTPolicy.from_pretrained loads this layout (checked by hand with MineStudio 1.1.6).
    hub = reference_hub_config(tiny.config)
    assert hub["action_space"] is None and hub["policy_kwargs"]["hidsize"] == 8
    assert config_from_json(hub, "hub") == {k: v for k, v in tiny.config.items() if v is not None}


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_max_pool_compact_indices_equals_max_pool(dtype, memory_format):
    torch.manual_seed(0)
    # After a ReLU: many ties at zero, where the choice of maximum matters.
    x = torch.relu(torch.randn(2, 3, 9, 10)).to(dtype, memory_format=memory_format).requires_grad_()
    y = x.detach().clone().requires_grad_()
    grad = torch.randn(2, 3, 5, 5).to(dtype)
    ours = MaxPoolCompactIndices.apply(x)
    plain = torch.nn.functional.max_pool2d(y, kernel_size=3, stride=2, padding=1)
    assert torch.equal(ours, plain)
    ours.backward(grad)
    plain.backward(grad)
    assert torch.equal(x.grad, y.grad)


@pytest.mark.parametrize("training", [True, False])
def test_image_encoder_runs_channels_last_end_to_end(tiny, training):
    # Convolutions are 1.4-1.5x faster channels-last than NCHW on CPU at VPT's shapes: one
    # contiguous() between the frames and the flatten would silently give that up.
    layers = []

    def channels_last(module, args, output):
        for x in (args[0], output):
            assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        layers.append(module)

    cnn = tiny.net.img_process.cnn
    for module in cnn.modules():
        if isinstance(module, FanInConv | ResidualBlock | DownStack | torch.nn.GroupNorm):
            module.register_forward_hook(channels_last)
    tiny.train(training)
    with torch.set_grad_enabled(training):
        tiny({"image": frames(2, 8)})
    # Per stack: itself, its first conv, post-pool GroupNorm, 2 blocks of 2 convs; unfused (eval)
    # also the convs' own GroupNorms (all but the first stack's first conv have one).
    assert len(layers) == 3 * 9 + (0 if training else 14)


def test_conv_weights_stay_channels_last_through_save_and_load(tiny, tmp_path):
    # Published .weights and our safetensors hold plain (NCHW) tensors; loading copies them into the
    # channels-last parameters, and saving writes the same values under the same keys.
    published = {key: value.contiguous() for key, value in tiny.state_dict().items()}
    torch.manual_seed(1)
    fresh = VPTPolicy(**TINY)
    fresh.load_state_dict(published)
    tiny.save_pretrained(tmp_path / "saved")
    for policy in (fresh, VPTPolicy.from_pretrained(tmp_path / "saved")):
        for key, value in policy.state_dict().items():
            assert torch.equal(value, published[key]), key
            if key.startswith("net.img_process.cnn.") and value.ndim == 4:
                assert value.is_contiguous(memory_format=torch.channels_last), key


def test_checkpoint_with_objects_needs_weights_only_false(tiny, tmp_path):
    model_file = write_model_file(tmp_path / "tiny.model", TINY_KWARGS)
    ckpt = {
        "state_dict": {f"mine_policy.{k}": v for k, v in tiny.state_dict().items()},
        "hyper_parameters": {"when": np.datetime64("2025-01-01")},
    }
    torch.save(ckpt, tmp_path / "objects.ckpt")
    with pytest.raises(CheckpointError, match=r"objects\.ckpt holds objects .*weights_only=False"):
        load_vpt_policy(model_file, tmp_path / "objects.ckpt")
    model = load_vpt_policy(model_file, tmp_path / "objects.ckpt", weights_only=False)
    loaded, saved = model.state_dict(), tiny.state_dict()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)


# Under bf16 autocast the first block of a stack sees float32 input, later ones bf16 (on CPU GroupNorm
# then runs in bf16, as autocast leaves it).
@pytest.mark.parametrize(
    ("dtype", "input_dtype"),
    [(torch.float32, torch.float32), (torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16)],
)
@pytest.mark.parametrize("keep_output", [True, False])
def test_fused_group_norm_conv_relu_equals_the_modules(dtype, input_dtype, keep_output):
    torch.manual_seed(0)
    conv = FanInConv(4, 6, 1.0, {"group_norm_groups": 2})
    with torch.no_grad():
        conv.norm.weight.normal_()
        conv.norm.bias.normal_()
    x = torch.randn(3, 4, 9, 9).to(input_dtype, memory_format=torch.channels_last)
    grads = []
    for fused in (True, False):
        conv.zero_grad()
        leaf = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = conv(leaf, keep_output=keep_output) if fused else torch.relu(conv.layer(conv.norm(leaf)))
        assert out.dtype == dtype
        out.float().square().sum().backward()
        grads.append([out, leaf.grad, *(p.grad for p in conv.parameters())])
    for ours, plain in zip(*grads, strict=True):
        assert torch.equal(ours, plain)


def test_down_stack_under_bf16_autocast_has_the_modules_gradients(monkeypatch):
    # Inside a stack GroupNorm sees bf16 activations; its backward must run as autograd runs the
    # modules' (in bf16 on CPU), not in float32, or the gradients drift from the reference's.
    torch.manual_seed(0)
    stack = DownStack(3, 16, 1.0, {"group_norm_groups": 1}, False, 1)
    x = torch.rand(4, 3, 32, 32).to(memory_format=torch.channels_last)

    def modules(self, x, keep_output=True, relu=True):
        x = self.layer(self.norm(x) if self.norm is not None else x)
        return torch.relu(x) if relu else x

    results = []
    for unfused in (False, True):
        if unfused:
            monkeypatch.setattr(FanInConv, "forward", modules)
        stack.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = stack(x)
        out.float().square().sum().backward()
        results.append([out, *(p.grad for p in stack.parameters())])
    for ours, plain in zip(*results, strict=True):
        assert torch.equal(ours, plain)


def test_compiled_image_encoder_trains_like_the_eager_one():
    """``model.compile`` on a VPT: the encoder compiles (aot_eager traces forward and backward as
    inductor does), two windows with memory carried give the eager losses and gradients, and the
    parameter names stay those of the published weights."""
    from torch._dynamo.utils import counters

    from minetrain.models.compiled import compile_policy

    torch.manual_seed(0)
    eager = VPTPolicy(**TINY).train()
    compiled = VPTPolicy(**TINY).train()
    compiled.load_state_dict(eager.state_dict())
    counters.clear()
    compile_policy(compiled, "aot_eager")
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    losses = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        memory, losses[name] = None, []
        for seed in range(2):
            out, memory = model({"image": frames(2, 8, seed)}, memory)
            loss = out["pi_logits"]["buttons"].logsumexp(-1).sum() + out["vpred"].sum()
            loss.backward()
            losses[name].append(loss.item())
    assert counters["stats"]["unique_graphs"] >= 1, "the image encoder was not compiled"
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=TOL)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=TOL, atol=1e-6, msg=name)
