import numpy as np
import pytest

from minetrain.data.conditioning import (
    choose_interactions,
    condition_window,
    decode_mask,
    interaction_type,
    item_rng,
)
from minetrain.data.store.codecs import rle_decode, rle_encode
from minetrain.errors import DataError

A = ("1", "minecraft.mine_block:minecraft:oak_log")
B = ("2", "minecraft.kill_entity:minecraft:cow")


def box_rle(top, left, bottom, right):
    mask = np.zeros((360, 640), dtype=np.uint8)
    mask[top:bottom, left:right] = 1
    return rle_encode(mask)


def value(obj_id, rle, frame_id=0, point=(180, 320)):
    return {
        "obj_id": obj_id,
        "rle_mask": rle,
        "event": "e",
        "point": point,
        "frame_id": frame_id,
        "frame_range": (0, 9),
    }


def test_relabelling_keeps_the_interaction_while_frames_show_it():
    frames = [{A: 0, B: 0}, {A: 0, B: 0}, {}, {A: 0, B: 0}, {B: 0}, {B: 0}, {A: 0}]
    for seed in range(20):
        chosen = choose_interactions(frames, item_rng(seed, 0, 0))
        assert chosen[6] == A and chosen[5] == B and chosen[4] == B
        assert chosen[3] == B  # B is still present: no new pick
        assert chosen[2] is None
        assert chosen[1] == chosen[0] == B  # the gap does not end the interaction


def test_relabelling_is_a_function_of_seed_epoch_and_item():
    frames = [{A: 0, B: 0}] * 4
    picks = {choose_interactions(frames, item_rng(5, e, i))[0] for e in range(10) for i in range(10)}
    assert picks == {A, B}
    for epoch, index in [(0, 0), (3, 17)]:
        assert choose_interactions(frames, item_rng(1, epoch, index)) == choose_interactions(
            frames, item_rng(1, epoch, index)
        )


def test_interaction_types_follow_spec():
    assert [interaction_type(i) for i in range(7)] == [0, 3, 2, 3, 4, 5, 6]
    with pytest.raises(DataError, match="obj_id 9"):
        interaction_type(9)


def nearest(mask, width, height):
    rows = np.arange(height) * mask.shape[0] // height
    cols = np.arange(width) * mask.shape[1] // width
    return mask[rows][:, cols]


@pytest.mark.parametrize("size", [(224, 224), (32, 32), (640, 360), (700, 400), (17, 9)])
def test_mask_decode_matches_full_decode_then_nearest_resize(size):
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = (rng.random((360, 640)) < 0.02).astype(np.uint8)
        top, left = rng.integers(0, 300), rng.integers(0, 600)
        mask[top : top + 50, left : left + 40] = 1
        rle = rle_encode(mask)
        assert np.array_equal(decode_mask(rle, size), nearest(mask, *size))
    assert decode_mask("", size).sum() == 0


def test_unsorted_rle_takes_the_general_decoder():
    rle = "641 10 1 5"
    expected = nearest(rle_decode(rle), 64, 36)
    assert np.array_equal(decode_mask(rle, (64, 36)), expected)
    with pytest.raises(DataError):
        decode_mask("1 2 3", (64, 36))


@pytest.mark.parametrize(
    "rle",
    ["1 2x", "1 2.5", "1,2", "0 4", "230400 2", "1 99999999999999999999", "99999999999999999999 1", "5 -2"],
)
def test_malformed_or_outside_rle_is_a_data_error_not_a_partial_mask(rle):
    with pytest.raises(DataError, match="RLE mask"):
        decode_mask(rle, (64, 36))


def test_adjacent_runs_and_a_run_to_the_last_pixel_decode_like_the_full_mask():
    rle = "1 5 6 5 230391 10"
    assert np.array_equal(decode_mask(rle, (640, 360)), rle_decode(rle))


def test_condition_window_outputs_and_stride():
    rle = box_rle(0, 0, 180, 320)
    frames = [{A: value(2, rle, frame_id=t)} if t % 2 else {} for t in range(7)]
    out = condition_window(frames, (64, 36), item_rng(0, 0, 0))
    assert out["obj_id"].tolist() == [-1, 2, -1, 2, -1, 2, -1]
    assert out["obj_mask"].shape == (7, 36, 64)
    assert out["obj_mask"][1].sum() == 18 * 32 and out["obj_mask"][0].sum() == 0
    assert np.allclose(out["point"][1], [0.5, 0.5]) and (out["point"][0] == -1).all()
    assert out["event"] == ["", "e", "", "e", "", "e", ""]
    assert out["frame_id"].tolist() == [-1, 1, -1, 3, -1, 5, -1]
    strided = condition_window(frames, (64, 36), item_rng(0, 0, 0), stride=3)
    assert strided["obj_id"].tolist() == [-1, 2, -1]
    assert strided["frame_id"].tolist() == [-1, 3, -1]


def test_raw_interaction_one_is_conditioned_as_interact():
    frames = [{A: value(1, box_rle(0, 0, 10, 10))}]
    assert condition_window(frames, (32, 32), item_rng(0, 0, 0))["obj_id"].tolist() == [3]


def test_condition_dropout_rate_and_independence_from_relabelling():
    rle = box_rle(10, 10, 100, 100)
    frames = [{A: value(2, rle), B: value(0, rle)}] * 4
    dropped = 0
    trials = 2000
    for index in range(trials):
        out = condition_window(frames, (16, 16), item_rng(0, 0, index), dropout=0.25)
        if (out["obj_id"] == -1).all():
            assert out["obj_mask"].sum() == 0 and out["event"] == [""] * 4
            dropped += 1
        else:
            kept = condition_window(frames, (16, 16), item_rng(0, 0, index), dropout=0.0)
            assert np.array_equal(out["obj_id"], kept["obj_id"])
    assert abs(dropped / trials - 0.25) < 0.035
    never = [condition_window(frames, (16, 16), item_rng(0, 0, i))["obj_id"][0] for i in range(200)]
    assert -1 not in never
