"""The behaviour-cloning loss of SPEC.md and the summing of several objectives."""

from __future__ import annotations

import math

import pytest
import torch
from offline_support import EchoPolicy, actions, window

from minetrain.actions import CAMERA_NULL_CLASS
from minetrain.errors import ConfigError
from minetrain.offline import MineLightning
from minetrain.offline.mine_callbacks import BehaviorCloneCallback, ObjectiveCallback
from minetrain.offline.mine_callbacks.behavior_clone import bc_terms


def test_bc_loss_by_hand() -> None:
    # Two frames, one padded. Buttons: 4 classes uniform except the target; camera: 121 classes.
    buttons = torch.zeros(1, 3, 8641)
    buttons[0, :, 7] = math.log(3.0)  # p(7) = 3 / (8640 + 3)
    camera = torch.zeros(1, 3, 121)
    camera[0, :, 5] = 2.0
    action = {"buttons": torch.tensor([[7, 0, 7]]), "camera": torch.tensor([[5, CAMERA_NULL_CLASS, 5]])}
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    terms = bc_terms({"buttons": buttons, "camera": camera}, action, mask)
    window_sum = bc_terms({"buttons": buttons, "camera": camera}, action, mask, reduction="sum")
    nll_b7 = -math.log(3 / 8643)
    nll_b0 = -math.log(1 / 8643)
    nll_c5 = -math.log(math.e**2 / (120 + math.e**2))
    # Frame 0: buttons + camera (camera moved); frame 1: buttons only (camera null); frame 2: padding.
    assert terms["loss"].item() == pytest.approx((nll_b7 + nll_c5 + nll_b0) / 2, rel=1e-5)
    assert window_sum["loss"].item() == pytest.approx(nll_b7 + nll_c5 + nll_b0, rel=1e-5)
    assert window_sum["button_loss"].item() == pytest.approx(nll_b7 + nll_b0, rel=1e-5)
    assert window_sum["camera_loss"].item() == pytest.approx(nll_c5, rel=1e-5)
    assert terms["buttons_nll"].item() == pytest.approx((nll_b7 + nll_b0) / 2, rel=1e-5)
    assert terms["camera_nll"].item() == pytest.approx(nll_c5, rel=1e-5)
    assert terms["buttons_acc"].item() == pytest.approx(0.5)
    assert terms["camera_acc"].item() == pytest.approx(1.0)
    # Predicted "move" on both real frames; one of them really moved.
    assert terms["camera_move_precision"].item() == pytest.approx(0.5)


def test_weight_and_gradient() -> None:
    logits = {"buttons": torch.randn(2, 4, 8641, requires_grad=True), "camera": torch.randn(2, 4, 121)}
    action = {"buttons": torch.randint(0, 8641, (2, 4)), "camera": torch.randint(0, 121, (2, 4))}
    batch = {"agent_action": action, "mask": torch.ones(2, 4)}
    full = BehaviorCloneCallback(1.0)(batch, 0, "train", {"pi_logits": logits}, None)
    half = BehaviorCloneCallback(0.5)(batch, 0, "train", {"pi_logits": logits}, None)
    assert half["loss"].item() == pytest.approx(0.5 * full["loss"].item())
    half["loss"].backward()
    assert logits["buttons"].grad is not None
    with pytest.raises(ConfigError, match="agent_action"):
        BehaviorCloneCallback()({"mask": torch.ones(2, 4)}, 0, "train", {"pi_logits": logits}, None)


class Constant(ObjectiveCallback):
    name = "const"

    def __call__(self, batch, batch_idx, step_name, latents, mine_policy):  # type: ignore[no-untyped-def]
        return {"loss": torch.tensor(2.0), "extra": torch.tensor(1.0)}


def test_objectives_sum_and_are_logged_by_name() -> None:
    module = MineLightning(
        EchoPolicy(), callbacks=[BehaviorCloneCallback(1.0), BehaviorCloneCallback(0.5), Constant()]
    )
    batch = window(["a", "b"], [0, 0]) | {"image": torch.zeros(2, 4, 1, 1, 3), "agent_action": actions(2, 4)}
    out = module._batch_step(batch, 0, "train")
    metrics = out["metrics"]
    assert set(metrics) >= {"loss", "bc/loss", "bc1/loss", "bc1/buttons_nll", "const/loss", "const/extra"}
    assert out["loss"].item() == pytest.approx(1.5 * metrics["bc/loss"].item() + 2.0)
    assert metrics["loss"].item() == pytest.approx(out["loss"].item())


def test_windows_skipped_for_bad_data_are_counted_over_the_epoch() -> None:
    import lightning as L

    frames = {"image": torch.zeros(2, 4, 1, 1, 3), "agent_action": actions(2, 4)}
    batches = [
        window(["a", "b"], [0, 4], real=real) | frames
        for real in ([4, 4], [0, 4], [0, 0])  # a window with no real frame is one the loader skipped
    ]
    module = MineLightning(EchoPolicy(), callbacks=[BehaviorCloneCallback(1.0)])
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    assert float(trainer.callback_metrics["train/skipped_windows"]) == 3.0


def test_default_reduction_sums_each_window_and_averages_over_the_batch() -> None:
    """The reference's scale: per-window sums of the masked frame NLLs, averaged over the windows."""
    torch.manual_seed(0)
    logits = {
        "buttons": torch.randn(3, 5, 8641).log_softmax(-1),
        "camera": torch.randn(3, 5, 121).log_softmax(-1),
    }
    action = {"buttons": torch.randint(0, 8641, (3, 5)), "camera": torch.randint(55, 66, (3, 5))}
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]]).float()
    batch = {"agent_action": action, "mask": mask}
    out = BehaviorCloneCallback(0.01)(batch, 0, "train", {"pi_logits": logits}, None)
    lp_b = logits["buttons"].gather(-1, action["buttons"][..., None])[..., 0]
    lp_c = logits["camera"].gather(-1, action["camera"][..., None])[..., 0]
    moved = (action["camera"] != CAMERA_NULL_CLASS).float()
    camera_loss = -(lp_c * mask * moved).sum(-1)
    button_loss = -(lp_b * mask).sum(-1)
    entropy = lambda lp: -(lp.exp() * lp).sum(-1)  # noqa: E731
    assert out["loss"].item() == pytest.approx(0.01 * (camera_loss + button_loss).mean().item(), rel=1e-5)
    assert out["camera_loss"].item() == pytest.approx(camera_loss.mean().item(), rel=1e-5)
    assert out["button_loss"].item() == pytest.approx(button_loss.mean().item(), rel=1e-5)
    expected_entropy = (entropy(logits["buttons"]) * mask + entropy(logits["camera"]) * mask * moved).sum(-1)
    assert out["entropy"].item() == pytest.approx(expected_entropy.mean().item(), rel=1e-5)
    assert out["bc_weight"].item() == pytest.approx(0.01)
    assert not out["entropy"].requires_grad
    mean = BehaviorCloneCallback(0.01, reduction="mean")(batch, 0, "train", {"pi_logits": logits}, None)
    assert mean["loss"].item() == pytest.approx(0.01 * (camera_loss + button_loss).sum().item() / 8, rel=1e-5)
    with pytest.raises(ConfigError, match="reduction='frames'; expected one of sum, mean"):
        BehaviorCloneCallback(reduction="frames")


def test_reference_metric_names_are_logged_next_to_minetrain_names() -> None:
    module = MineLightning(EchoPolicy(), callbacks=[BehaviorCloneCallback(0.5), Constant()])
    batch = window(["a", "b"], [0, 0]) | {"image": torch.zeros(2, 4, 1, 1, 3), "agent_action": actions(2, 4)}
    metrics = module._batch_step(batch, 0, "train")["metrics"]
    assert {"loss", "camera_loss", "button_loss", "entropy", "bc_weight", "bc/button_loss", "extra"} <= set(
        metrics
    )
    # As the reference: every key summed over the objectives.
    assert metrics["loss"].item() == pytest.approx(metrics["bc/loss"].item() + 2.0)
    assert metrics["bc_weight"].item() == pytest.approx(0.5)
