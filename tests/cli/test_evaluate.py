import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from minetrain.actions import CAMERA_NULL_CLASS, NUM_CAMERA_CLASSES, camera_bins, dequantize_camera
from minetrain.cli.main import main
from minetrain.data.dataset import RawDataset
from minetrain.evaluation import (
    ALL,
    METRIC_FRAMES,
    MetricSums,
    camera_angle_error,
    evaluate_policies,
    lane_plan,
)
from minetrain.models import load_checkpoint
from minetrain.offline.mine_callbacks.behavior_clone import bc_terms


def _evaluate(args, tmp_path, name="eval"):
    out = tmp_path / name
    assert main(["evaluate", *map(str, args), "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text()), out


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


def test_evaluate_run_dir_writes_report_plot_and_table(
    trained_run, full_checkpoint, eval_dataset, tmp_path, capsys
):
    report, out = _evaluate([trained_run / "checkpoints", eval_dataset], tmp_path)
    printed = capsys.readouterr().out
    assert report["checkpoint"] == str(full_checkpoint)  # the newest checkpoint, not its -EMA file
    assert report["split"] == "val"
    # The val split training used: split_ratio 0.5 of 6 episodes, as the checkpoint recorded.
    assert len(report["episodes"]) == 3
    assert report["data"]["frame_width"] == 32 and report["data"]["win_len"] == 8
    assert set(report["results"]) == {"original", "ema"}
    for weights in report["results"].values():
        overall = weights[ALL]
        assert overall["frames"] == sum(RawDataset(eval_dataset, split="val", split_ratio=0.5,
                                                   shuffle_episodes=True).windows.lengths)  # fmt: skip
        for name in METRIC_FRAMES:
            assert overall[name] is not None and math.isfinite(overall[name]), name
        assert 0.0 <= overall["buttons_acc"] <= 1.0
        groups = [g for g in weights if g != ALL]
        assert groups, "the synthetic data has interactions"
        assert sum(weights[g]["frames"] for g in groups) == overall["frames"]
        for group in groups:
            for name, frames in METRIC_FRAMES.items():
                value = weights[group][name]
                assert (value is None) == (weights[group][frames] == 0)
    assert report["results"]["original"][ALL]["loss"] != report["results"]["ema"][ALL]["loss"]
    image = Image.open(out / "report.png")
    assert image.size[0] > 500 and image.size[1] > 300
    assert "original weights" in printed and "ema weights" in printed


def test_ema_from_weights_file_sibling_matches_full_checkpoint(
    trained_run, full_checkpoint, eval_dataset, tmp_path
):
    full, _ = _evaluate([full_checkpoint, eval_dataset, "--split", "all", "--batches", "2"], tmp_path, "full")
    weights_file = trained_run / "weights" / "weight-epoch=0-step=4.ckpt"
    light, _ = _evaluate(
        [weights_file, eval_dataset, "--split", "all", "--batches", "2"], tmp_path, "weights"
    )
    assert set(light["results"]) == {"original", "ema"}
    for name in ("original", "ema"):
        assert light["results"][name][ALL]["loss"] == pytest.approx(
            full["results"][name][ALL]["loss"], rel=1e-6
        )


def test_load_checkpoint_ema_weights_are_the_ema_state(full_checkpoint):
    loaded = load_checkpoint(full_checkpoint)
    ema_state = torch.load(full_checkpoint, weights_only=True)["ema_state_dict"]
    for key, value in loaded.ema.state_dict().items():
        assert torch.equal(value, ema_state[f"module.mine_policy.{key}"]), key
    assert not all(
        torch.equal(a, b) for a, b in zip(loaded.ema.parameters(), loaded.original.parameters(), strict=True)
    )


def test_memory_carry_does_not_depend_on_batching(full_checkpoint, eval_dataset):
    policy = load_checkpoint(full_checkpoint).original
    dataset = RawDataset(
        eval_dataset, frame_width=32, frame_height=32, win_len=8, split="val", split_ratio=0.5
    )
    one = evaluate_policies({"p": policy}, dataset, dataset.window_counts, lanes=1)["p"]
    three = evaluate_policies({"p": policy}, dataset, dataset.window_counts, lanes=3)["p"]
    assert one.keys() == three.keys()
    for group in one:
        for name, value in one[group].items():
            assert value == pytest.approx(three[group][name], rel=1e-5, abs=1e-6), (group, name)


def test_lane_plan_walks_each_episode_in_order_on_one_lane():
    counts = [3, 1, 4, 2, 5]
    plan = lane_plan(counts, lanes=2)
    flat = [index for batch in plan for _, index in batch]
    assert sorted(flat) == list(range(sum(counts)))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for batch_no, batch in enumerate(plan):
        assert len({lane for lane, _ in batch}) == len(batch)
        for lane, index in batch:
            episode = int(np.searchsorted(offsets, index, side="right")) - 1
            if index > offsets[episode]:  # not an episode start: the lane held the previous window
                assert (lane, index - 1) in plan[batch_no - 1]


def test_metric_sums_equal_bc_terms_over_all_frames():
    gen = torch.Generator().manual_seed(0)
    b, t = 3, 6
    logits = {
        "buttons": torch.randn(b, t, 8641, generator=gen).log_softmax(-1),
        "camera": torch.randn(b, t, NUM_CAMERA_CLASSES, generator=gen).log_softmax(-1),
    }
    camera = torch.randint(0, NUM_CAMERA_CLASSES, (b, t), generator=gen)
    camera[0, :3] = CAMERA_NULL_CLASS
    batch = {
        "image": torch.zeros(b, t, 2, 2, 3, dtype=torch.uint8),
        "agent_action": {"buttons": torch.randint(0, 8641, (b, t), generator=gen), "camera": camera},
        "mask": torch.tensor([[1] * t, [1] * t, [1, 1, 1, 0, 0, 0]], dtype=torch.uint8),
        "segment": {"obj_id": torch.tensor([[-1] * t, [2] * t, [2, 2, -1, -1, -1, -1]])},
    }
    sums = MetricSums()
    for rows in (slice(0, 1), slice(1, 3)):  # two batches of different sizes
        part = {
            "image": batch["image"][rows],
            "agent_action": {k: v[rows] for k, v in batch["agent_action"].items()},
            "mask": batch["mask"][rows],
            "segment": {"obj_id": batch["segment"]["obj_id"][rows]},
        }
        sums.add({k: v[rows] for k, v in logits.items()}, part)
    result = sums.result()
    assert list(result) == ["all", "none", "Mine"]
    expected = bc_terms(logits, batch["agent_action"], batch["mask"])
    for name in METRIC_FRAMES:
        if name != "camera_angle_error_deg":
            assert result[ALL][name] == pytest.approx(float(expected[name]), rel=1e-5), name
    mine = batch["mask"].bool() & (batch["segment"]["obj_id"] == 2)
    assert result["Mine"]["frames"] == int(mine.sum()) == 8
    assert result["Mine"]["loss"] == pytest.approx(
        float(bc_terms(logits, batch["agent_action"], mine)["loss"])
    )


def test_camera_angle_error_in_degrees():
    log_probs = torch.full((1, 2, NUM_CAMERA_CLASSES), -1e9)
    log_probs[0, 0, CAMERA_NULL_CLASS] = 0.0
    log_probs[0, 1, 0] = 0.0  # bins (0, 0): the largest negative pitch and yaw
    recorded = torch.tensor([[[3.0, 4.0], [0.0, 0.0]]])
    error = camera_angle_error(log_probs, recorded)
    corner = float(dequantize_camera(camera_bins(torch.tensor(0)))[0])
    assert error[0, 0] == pytest.approx(5.0)
    assert error[0, 1] == pytest.approx(math.hypot(corner, corner))


def test_missing_checkpoint_is_one_line(eval_dataset, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope.ckpt"), str(eval_dataset)]) == 2
    assert "nope.ckpt does not exist" in _error_line(capsys)


def test_empty_checkpoint_dir_is_one_line(eval_dataset, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), str(eval_dataset)]) == 2
    assert "holds no *.ckpt" in _error_line(capsys)


def test_checkpoint_of_another_architecture_is_one_line(eval_dataset, tmp_path, capsys):
    path = tmp_path / "resnet.ckpt"
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(2, 2)}}, path)
    assert main(["evaluate", str(path), str(eval_dataset)]) == 2
    assert "is not a RocketPolicy checkpoint" in _error_line(capsys)


def test_missing_dataset_dir_is_one_line(full_checkpoint, tmp_path, capsys):
    assert main(["evaluate", str(full_checkpoint), str(tmp_path / "nodata")]) == 2
    assert "nodata: dataset dir does not exist" in _error_line(capsys)


def test_empty_val_split_is_one_line(full_checkpoint, eval_dataset, capsys):
    assert main(["evaluate", str(full_checkpoint), str(eval_dataset), "--split-ratio", "1.0"]) == 2
    assert "--split all" in _error_line(capsys)
