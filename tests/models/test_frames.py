"""I420 -> RGB and the bilinear resize on the device equal what the loader's RGB path gives."""

import numpy as np
import pytest
import torch

from minetrain.data.store.codecs import LinearResize, copy_i420, decoded_frames, encode_video
from minetrain.models.frames import i420_to_rgb, linear_resize


def scene(n: int, height: int, width: int) -> np.ndarray:
    """Textured, moving frames with saturated colours, so every branch of the conversion is used."""
    rng = np.random.default_rng(0)
    world = rng.integers(0, 256, (height // 4 + n, width // 4 + n, 3), dtype=np.uint8)
    world = world.repeat(4, 0).repeat(4, 1)
    return np.stack([world[t : t + height, 2 * t : 2 * t + width] for t in range(n)])


def decoded(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    frames = list(decoded_frames(data))
    rgb = np.stack([frame.to_ndarray(format="rgb24") for frame in frames])
    planes = np.empty((len(frames), frames[0].height * 3 // 2, frames[0].width), np.uint8)
    for frame, out in zip(frames, planes, strict=True):
        copy_i420(frame, out)
    return rgb, planes


@pytest.mark.parametrize(("height", "width"), [(64, 64), (36, 64)])
def test_conversion_is_pyav_rgb24_within_one_level(height, width):
    rgb, planes = decoded(encode_video(scene(6, height, width)))
    ours = i420_to_rgb(torch.from_numpy(planes)).numpy()
    diff = np.abs(ours.astype(int) - rgb)
    assert ours.shape == rgb.shape
    # swscale's x86 steps give 0 here; other builds round within a level.
    assert diff.max() <= 1 and diff.mean() <= 0.5


@pytest.mark.parametrize(("src", "dst"), [((64, 64), (32, 32)), ((36, 64), (50, 90)), ((64, 64), (20, 44))])
def test_device_resize_is_the_loaders_linear_resize_exactly(src, dst):
    frames = scene(3, *src)
    ours = linear_resize(torch.from_numpy(frames), dst).numpy()
    resize = LinearResize(src[::-1], dst[::-1])
    np.testing.assert_array_equal(ours, np.stack([resize(frame).copy() for frame in frames]))


def test_convert_and_resize_in_one_step_keeps_leading_axes():
    rgb, planes = decoded(encode_video(scene(4, 64, 64)))
    batch = torch.from_numpy(planes).view(2, 2, 96, 64)
    ours = i420_to_rgb(batch, (32, 48))
    expected = np.stack([LinearResize((64, 64), (48, 32))(frame).copy() for frame in rgb])
    assert ours.shape == (2, 2, 32, 48, 3)
    assert int(np.abs(ours.reshape(4, 32, 48, 3).numpy().astype(int) - expected).max()) <= 1
