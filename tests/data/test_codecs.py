import io

import av
import numpy as np
import pytest

from minetrain.data.store.codecs import decode_video, encode_video, rle_decode, rle_encode
from minetrain.errors import DataError


def reference_rle_encode(mask: np.ndarray) -> str:
    """SPEC's convention written the slow, obvious way: 1-based start and length of each run of 1s."""
    flat = mask.reshape(-1)
    runs, index = [], 0
    while index < len(flat):
        if flat[index]:
            begin = index
            while index < len(flat) and flat[index]:
                index += 1
            runs += [begin + 1, index - begin]
        else:
            index += 1
    return " ".join(map(str, runs))


def moving_frames(n: int, height: int, width: int) -> np.ndarray:
    frames = np.zeros((n, height, width, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, None, :]
    for i in range(n):
        frames[i, (2 * i) % height :, :, 1] = 180
    return frames


@pytest.mark.parametrize("shape", [(360, 640), (7, 5), (1, 1)])
def test_rle_round_trip_matches_the_spec_convention(shape):
    rng = np.random.default_rng(0)
    for density in (0.0, 0.1, 0.5, 1.0):
        mask = (rng.random(shape) < density).astype(np.uint8)
        rle = rle_encode(mask)
        assert rle == reference_rle_encode(mask)
        np.testing.assert_array_equal(rle_decode(rle, shape), mask)


def test_rle_is_row_major_and_one_based():
    mask = np.zeros((360, 640), np.uint8)
    mask[0, 0:3] = 1
    mask[1, 639] = 1
    mask[2, 0] = 1
    assert rle_encode(mask) == "1 3 1280 2"
    assert rle_decode("1 3 1280 2").sum() == 5


def test_rle_decode_unions_overlapping_runs():
    np.testing.assert_array_equal(rle_decode("1 3 2 3", (1, 6)), [[1, 1, 1, 1, 0, 0]])


@pytest.mark.parametrize("bad", ["0 3", "5 10", "1 2 3", "a b", "3 -1"])
def test_rle_out_of_range_or_malformed_is_a_data_error(bad):
    with pytest.raises(DataError, match="RLE"):
        rle_decode(bad, (2, 3))


def test_empty_rle_is_an_empty_mask():
    assert rle_encode(np.zeros((4, 4))) == ""
    assert rle_decode("", (4, 4)).sum() == 0


@pytest.mark.parametrize("size", [(64, 64), (15, 17), (16, 16)])
def test_video_round_trip_keeps_count_size_and_content(size):
    frames = moving_frames(9, *size)
    data = encode_video(frames, crf=10)
    decoded = decode_video(data)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 8  # chroma subsampling of sharp edges


def test_video_is_an_h264_mp4_at_the_given_rate():
    data = encode_video(moving_frames(4, 32, 48), fps=20)
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name.startswith("mov,mp4")
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 20


@pytest.mark.parametrize("size", [(32, 32), (224, 224)])
def test_encoding_is_a_pure_function_of_the_frames(size):
    """Converting a dataset twice must give the same chunks; x264 B-frames broke that at these sizes."""
    noise = np.random.default_rng(0).integers(-20, 20, (21, *size, 3))
    frames = np.clip(moving_frames(21, *size) + noise, 0, 255).astype(np.uint8)
    first = encode_video(frames)
    for seed in range(3):
        encode_video(np.random.default_rng(seed).integers(0, 256, frames.shape, dtype=np.uint8))
        assert encode_video(frames) == first  # not changed by what earlier encodes left in memory


def test_decode_resizes_inside_the_decoder():
    decoded = decode_video(encode_video(moving_frames(3, 32, 48)), size=(24, 8), threads=2)
    assert decoded.shape == (3, 8, 24, 3)


def test_corrupt_video_is_a_data_error():
    data = encode_video(moving_frames(4, 16, 16))
    with pytest.raises(DataError, match=r"does not decode|no frames"):
        decode_video(data[: len(data) // 2])
    with pytest.raises(DataError):
        decode_video(b"not a video")


def test_bad_frames_are_a_data_error():
    with pytest.raises(DataError, match="uint8"):
        encode_video(np.zeros((2, 8, 8, 3), np.float32))
