"""The reused decoder gives the frames of ``av.open`` bit for bit, across chunks of any stream."""

import multiprocessing
import os
from pathlib import Path

import av
import numpy as np
import pytest

from minetrain.data.store import TrajectoryStore
from minetrain.data.store.codecs import copy_i420, decoded_frames, encode_video, iter_video_frames
from minetrain.data.store.decoder import mp4_packets, process_decoder

FIXTURES = Path(__file__).parents[1] / "fixtures"


def noisy_frames(n: int, height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height + n, width + n, 3), dtype=np.uint8)
    return np.stack([base[i : i + height, i : i + width] for i in range(n)])


def rgb(data: bytes, reuse: bool) -> list[np.ndarray]:
    return [frame.copy() for frame in iter_video_frames(data, reuse_decoder=reuse)]


def assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_reused_decoder_matches_av_open_on_chunks_written_by_the_reference():
    # The reference's chunks have B-frames: an edit list and composition offsets.
    store = TrajectoryStore(FIXTURES / "store_reference", modalities=("image",))
    for episode in store.episodes:
        for start in store.chunk_starts(episode, "image"):
            data = store.raw_chunk(episode, "image", start)
            assert mp4_packets(data) is not None
            assert_same(rgb(data, reuse=False), rgb(data, reuse=True))


def test_reused_decoder_takes_a_fresh_decoder_when_size_or_profile_change():
    # 33x47 is stored as yuv444p (High 4:4:4): another profile and other extradata.
    shapes = [(32, 48), (32, 48), (33, 47), (64, 64), (32, 48)]
    chunks = [encode_video(noisy_frames(5, h, w, seed)) for seed, (h, w) in enumerate(shapes)]
    decoder = process_decoder()
    contexts = []
    for data in chunks:
        assert_same(rgb(data, reuse=False), rgb(data, reuse=True))
        contexts.append(decoder.context)
    assert contexts[0] is contexts[1]  # same stream parameters: the decoder is kept
    assert len({id(c) for c in contexts[1:]}) == 4
    assert decoder.params.width == 48 and decoder.params.height == 32


def test_a_chunk_left_half_decoded_does_not_leak_into_the_next():
    first, second = (encode_video(noisy_frames(8, 32, 32, seed)) for seed in (1, 2))
    frames = iter_video_frames(first, reuse_decoder=True)
    next(frames)
    frames.close()
    assert_same(rgb(second, reuse=False), rgb(second, reuse=True))


def test_a_chunk_started_while_another_is_suspended_gets_its_own_frames():
    first, second = (encode_video(noisy_frames(8, 32, 32, seed)) for seed in (5, 6))
    suspended = iter_video_frames(first, reuse_decoder=True)
    next(suspended)
    assert_same(rgb(second, reuse=False), rgb(second, reuse=True))
    with pytest.raises(RuntimeError, match="after the next chunk started"):
        list(suspended)


def test_yuv_planes_are_the_decoded_frame_as_i420():
    data = encode_video(noisy_frames(4, 32, 48, 3))
    for reuse in (False, True):
        for frame in decoded_frames(data, reuse_decoder=reuse):
            out = np.empty((48, 48), np.uint8)
            copy_i420(frame, out)
            planes = frame.to_ndarray()  # yuv420p: (3H/2, W) in the same I420 layout
            np.testing.assert_array_equal(out, planes)


@pytest.mark.parametrize("damage", ["truncate", "no-moov"])
def test_chunks_the_demuxer_does_not_understand_fall_back_to_av_open(damage):
    data = encode_video(noisy_frames(4, 32, 32, 4))
    moov = data.find(b"moov") - 4
    damaged = data[: len(data) // 2] if damage == "truncate" else data[:moov]
    assert mp4_packets(damaged) is None

    def outcome(reuse: bool) -> str:
        try:
            return f"{len(list(decoded_frames(damaged, reuse_decoder=reuse)))} frames"
        except av.FFmpegError as exc:
            return type(exc).__name__

    assert outcome(True) == outcome(False)


def test_a_forked_process_decodes_after_its_parent_used_a_threaded_decoder():
    # The parent's decoder owns FFmpeg frame threads that a fork does not copy: the child must
    # leave it alone (freeing it waited for those threads forever) and decode with its own.
    data = encode_video(noisy_frames(8, 32, 32, 7))
    expected = rgb(data, reuse=False)
    assert len(list(iter_video_frames(data, threads=2))) == len(expected)

    def decode_in_child() -> None:
        same = all(np.array_equal(x, y) for x, y in zip(rgb(data, reuse=True), expected, strict=True))
        os._exit(0 if same else 1)

    child = multiprocessing.get_context("fork").Process(target=decode_in_child)
    child.start()
    child.join(30)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("a forked child hung decoding after its parent used a threaded decoder")
    assert child.exitcode == 0
