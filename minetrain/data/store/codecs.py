"""Chunk codecs: H.264 video for images, pickles for the rest, RLE strings for masks.

The formats match the reference library byte for byte where it matters to readers: an image
chunk is a plain MP4 (H.264, yuv420p) of the chunk's frames, other chunks are pickles (read back
with ``safe_pickle.load_pickle``), and a mask is a string of 1-based "start length" pairs over the
row-major flattened mask.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
from collections.abc import Iterator
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from minetrain.data.store.decoder import mp4_packets, process_decoder
from minetrain.errors import ConfigError, DataError

DEFAULT_CRF = 23
DEFAULT_PRESET = "medium"
MASK_SHAPE = (360, 640)
# Bookkeeping and chunk pickles use protocol 4 so that older Pythons/readers load them too.
PICKLE_PROTOCOL = 4
# x264's B-frame lookahead (with mbtree on) makes some frame sizes, 32x32 and 224x224 among them,
# encode differently depending on what earlier encodes left in memory, even single-threaded, so
# converting a dataset twice gave different chunks. Without B-frames an encode is a pure function
# of its input; turning mbtree off instead would also work but makes noisy chunks several times larger.
X264_PARAMS = "bframes=0"


def encode_video(
    frames: np.ndarray, fps: int = 20, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET
) -> bytes:
    """Encode (N, H, W, 3) uint8 RGB frames as the bytes of an H.264 MP4, the same bytes every time.

    yuv420p needs even sizes; odd ones are stored as yuv444p (High 4:4:4), which any FFmpeg
    decodes at the exact original size instead of being padded or cropped.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise DataError(
            f"video frames must be a non-empty (N, H, W, 3) uint8 array, got {frames.dtype} {frames.shape}"
        )
    height, width = frames.shape[1:3]
    options = {"crf": str(crf), "preset": preset, "x264-params": X264_PARAMS}
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("h264", rate=fps, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


@functools.cache
def _scaler_takes_threads() -> bool:
    """PyAV >= 14 scales frames on every core unless told otherwise; older versions use one thread."""
    try:
        VideoReformatter().reformat(av.VideoFrame(16, 16, "yuv420p"), format="rgb24", threads=1)
    except TypeError:
        return False
    return True


INTERPOLATIONS = ("linear", "antialias")
# OpenCV's INTER_LINEAR on uint8 works in fixed point: weights are integers scaled by 2 ** 11.
COEF_BITS = 11


def linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and fixed-point weights of each output pixel along one axis, as OpenCV computes them.

    Pixel centres are aligned (source coordinate ``(x + 0.5) * src / dst - 0.5``, in float32 as
    OpenCV does), coordinates past either edge take the edge pixel, and weights are rounded to
    integers out of 2048 half to even (OpenCV's ``saturate_cast<short>``).
    """
    position = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    frac = position - first.astype(np.float32)
    outside = (first < 0) | (first >= src - 1)
    frac[outside] = 0
    first = np.clip(first, 0, src - 1)
    second = np.minimum(first + 1, src - 1)
    scale = np.float32(1 << COEF_BITS)
    weight_second = np.rint(frac * scale).astype(np.int32)
    weight_first = np.rint((np.float32(1) - frac) * scale).astype(np.int32)
    return first, second, weight_first, weight_second


class LinearResize:
    """Resize (H, W, C) uint8 frames to the pixels of OpenCV's ``cv2.resize(..., INTER_LINEAR)``.

    The reference library resizes decoded frames with OpenCV; this reproduces its fixed-point
    arithmetic (horizontal pass, then the vertical one with its shifts and rounding) in numpy, so
    minetrain feeds the model the same pixels without depending on OpenCV. Bilinear without
    antialiasing: shrinking by more than 2x skips source pixels, as OpenCV does. One instance
    keeps its work buffers (halving the time per frame) and returns the same output array on every
    call, so use one per thread and copy results that must outlive the next call.
    """

    def __init__(self, src: tuple[int, int], dst: tuple[int, int], channels: int = 3) -> None:
        (src_w, src_h), (width, height) = src, dst
        x0, x1, a0, a1 = linear_taps(src_w, width)
        self.y0, self.y1, b0, b1 = linear_taps(src_h, height)
        lanes = np.arange(channels)
        # Columns index the flattened (W * C) row, so every gather runs along the contiguous axis.
        self.x0, self.x1 = (x0[:, None] * channels + lanes).ravel(), (x1[:, None] * channels + lanes).ravel()
        self.a0, self.a1 = np.repeat(a0, channels), np.repeat(a1, channels)
        self.b0, self.b1 = b0[:, None], b1[:, None]
        # Weights that sum to at most 2048 cannot leave [0, 255]; OpenCV saturates otherwise.
        one = 1 << COEF_BITS
        self.saturate = bool((a0 + a1 > one).any() or (b0 + b1 > one).any())
        self.src_shape = (src_h, src_w * channels)
        self.gathered = np.empty((2, src_h, width * channels), dtype=np.uint8)
        self.horizontal = np.empty((2, src_h, width * channels), dtype=np.int32)
        self.vertical = np.empty((2, height, width * channels), dtype=np.int32)
        self.out = np.empty((height, width, channels), dtype=np.uint8)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        rows = frame.reshape(self.src_shape)
        (left, right), (horizontal, scratch), (top, bottom) = self.gathered, self.horizontal, self.vertical
        np.take(rows, self.x0, axis=1, out=left)
        np.take(rows, self.x1, axis=1, out=right)
        np.multiply(left, self.a0, out=horizontal)
        np.multiply(right, self.a1, out=scratch)
        horizontal += scratch
        horizontal >>= 4
        np.take(horizontal, self.y0, axis=0, out=top)
        np.take(horizontal, self.y1, axis=0, out=bottom)
        top *= self.b0
        top >>= 16
        bottom *= self.b1
        bottom >>= 16
        top += bottom
        top += 2
        top >>= 2
        if self.saturate:
            np.clip(top, 0, 255, out=top)
        np.copyto(self.out.reshape(top.shape), top, casting="unsafe")
        return self.out


def check_interpolation(interpolation: str) -> str:
    """``interpolation`` if it names one of ``INTERPOLATIONS``, else a one-line ``ConfigError``."""
    if interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"resize_interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )
    return interpolation


IMAGE_FORMATS = ("rgb", "yuv420")


def check_image_format(image_format: str) -> str:
    """``image_format`` if it names one of ``IMAGE_FORMATS``, else a one-line ``ConfigError``."""
    if image_format not in IMAGE_FORMATS:
        raise ConfigError(f"image_format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    return image_format


def decoded_frames(data: bytes, threads: int = 1, reuse_decoder: bool = True) -> Iterator[av.VideoFrame]:
    """The frames of an MP4 as PyAV frames, as stored (yuv420p, or yuv444p for odd sizes).

    ``reuse_decoder``: feed the chunk's packets to this process's decoder (``decoder.py``, the
    same frames without opening a container); chunks it does not understand are opened with
    ``av.open`` as with ``reuse_decoder=False``. Raises ``av.FFmpegError`` on corrupt data.
    """
    demuxed = None
    if reuse_decoder:
        try:
            demuxed = mp4_packets(data)
        except (struct.error, IndexError):
            demuxed = None  # damaged tables: av.open reports the damage as it always did
    if demuxed is not None:
        yield from process_decoder().decode(*demuxed, threads)
        return
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.video:
            return  # e.g. a truncated chunk: callers report it as holding too few frames
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        if threads != 1:
            stream.thread_type = "AUTO"
        yield from container.decode(stream)


def iter_video_frames(
    data: bytes,
    size: tuple[int, int] | None = None,
    threads: int = 1,
    interpolation: str = "linear",
    reuse_decoder: bool = True,
) -> Iterator[np.ndarray]:
    """Yield the frames of an MP4 as (H, W, 3) uint8 RGB arrays, resized to ``size`` = (width, height).

    ``interpolation``: ``"linear"`` gives the reference's pixels (OpenCV INTER_LINEAR, see
    ``LinearResize``); ``"antialias"`` lets FFmpeg's swscale resize while it converts colours
    (its bilinear filter widens when shrinking, so every source pixel counts: smoother frames,
    and cheaper). One reformatter serves every frame, so colour conversion reuses one swscale
    context. ``reuse_decoder``: see ``decoded_frames``. Each array may be a view of PyAV's frame
    buffer: copy it if it must outlive the loop. Raises ``av.FFmpegError`` on corrupt data;
    callers add the context.
    """
    check_interpolation(interpolation)
    width, height = size if size is not None and interpolation == "antialias" else (None, None)
    reformatter = VideoReformatter()
    scaling = {"threads": threads} if _scaler_takes_threads() else {}
    resize: LinearResize | None = None
    for frame in decoded_frames(data, threads, reuse_decoder):
        rgb = reformatter.reformat(frame, width=width, height=height, format="rgb24", **scaling)
        array = rgb.to_ndarray()
        if size is not None and width is None and (frame.width, frame.height) != tuple(size):
            if resize is None:
                resize = LinearResize((frame.width, frame.height), size)
            array = resize(array)
        yield array


def copy_i420(frame: av.VideoFrame, out: np.ndarray) -> None:
    """Write a yuv420p frame's planes into ``out`` (3H/2, W): Y rows, then U, then V, each packed.

    The chroma planes (H/2, W/2) are stored row after row, two per row of ``out`` (the I420 layout).
    One strided view per plane and one copy each: this runs once per frame of every batch, where
    reading the planes, not copying their bytes, was most of its time.
    """
    if not out.flags.c_contiguous:
        raise ValueError("copy_i420 writes into a C-contiguous (3H/2, W) array")
    luma, blue, red = frame.planes
    height, width = frame.height, frame.width
    out[:height] = np.ndarray((height, width), np.uint8, luma, strides=(luma.line_size, 1))
    chroma = out[height:].reshape(2, height // 2, width // 2)
    shape = chroma.shape[1:]
    chroma[0] = np.ndarray(shape, np.uint8, blue, strides=(blue.line_size, 1))
    chroma[1] = np.ndarray(shape, np.uint8, red, strides=(red.line_size, 1))


def decode_video(
    data: bytes, size: tuple[int, int] | None = None, threads: int = 1, interpolation: str = "linear"
) -> np.ndarray:
    """Decode an MP4 to (N, H, W, 3) uint8 RGB, optionally resized to ``size`` = (width, height)."""
    try:
        frames = [frame.copy() for frame in iter_video_frames(data, size, threads, interpolation)]
    except av.FFmpegError as exc:
        raise DataError(f"video chunk of {len(data)} bytes does not decode ({exc}); re-convert it") from None
    if not frames:
        raise DataError(f"video chunk of {len(data)} bytes holds no frames; re-convert it")
    return np.stack(frames)


def dumps_chunk(value: Any) -> bytes:
    """Pickle a non-image chunk the way the reference stores it."""
    return pickle.dumps(value, protocol=PICKLE_PROTOCOL)


def rle_encode(mask: np.ndarray) -> str:
    """Run-length encode a 2-D mask (nonzero = object): "start length ..." with 1-based starts."""
    pixels = np.asarray(mask).reshape(-1) != 0
    edges = np.flatnonzero(np.diff(pixels, prepend=False, append=False)) + 1
    edges[1::2] -= edges[::2]
    return " ".join(map(str, edges.tolist()))


def rle_decode(rle: str, shape: tuple[int, int] = MASK_SHAPE) -> np.ndarray:
    """Decode an RLE string into a uint8 0/1 mask of ``shape``; overlapping runs are unioned."""
    total = int(shape[0]) * int(shape[1])
    try:
        numbers = np.array(rle.split(), dtype=np.int64)
    except (ValueError, AttributeError, OverflowError):
        raise DataError(
            f"RLE mask {str(rle)[:40]!r} is not a string of integers; re-convert the segmentation"
        ) from None
    if numbers.size % 2:
        raise DataError(f"RLE mask has an odd number of values ({numbers.size}); re-convert the segmentation")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    ends = starts + lengths
    if numbers.size and (starts.min() < 0 or lengths.min() < 0 or ends.max() > total):
        raise DataError(
            f"RLE mask runs fall outside a {shape[0]}x{shape[1]} mask (pixels 1..{total}); "
            "check the mask shape or re-convert the segmentation"
        )
    steps = np.zeros(total + 1, dtype=np.int32)
    np.add.at(steps, starts, 1)
    np.add.at(steps, ends, -1)
    return (np.cumsum(steps[:-1]) > 0).astype(np.uint8).reshape(shape)
