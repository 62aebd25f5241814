"""Frames batched as I420 planes (``data_params.image_format="yuv420"``), made RGB on the policy's device.

Decoders produce YUV; converting every frame to RGB on the loader's CPU costs loader time and
doubles the bytes of a batch. A YUV batch carries each frame's planes (Y, then U, then V:
(3H/2, W) uint8) and the policy converts them as the first step of its ``forward``
(``parse_batch`` calls ``i420_to_rgb``), on the GPU in a real run.

The colours are those of the RGB path: the store's chunks are BT.601 limited range (the H.264
streams carry no colour tags, so FFmpeg's swscale converts them with its defaults), swscale's
unscaled converter takes each chroma sample for its 2x2 pixels, and ``i420_to_rgb`` repeats its
x86 fixed-point steps in int32 (bit for bit on the test frames; other builds of swscale round
within a level of it). Frames stored at another size than the policy's are then resized with the
reference's bilinear arithmetic (``linear_resize``, the integer steps of
``store.codecs.LinearResize``), so they are the RGB path's resized frames.
"""

from __future__ import annotations

import functools

import torch

from minetrain.data.store.codecs import COEF_BITS, linear_taps

# swscale's converter for BT.601 limited range ("MPEG": Y in [16, 235], chroma around 128), as
# its x86 code runs it: samples times 8, products with 13-bit coefficients kept as their top 16
# bits (floor), summed, saturated to uint8. Coefficients: 255/219 for Y, then the BT.601 chroma
# weights (1.596, 0.813, 0.392, 2.017), each scaled by 2 ** 13 and rounded.
_Y_COEF, _VR_COEF, _VG_COEF, _UG_COEF, _UB_COEF = 9539, 13075, -6660, -3209, 16525


def i420_to_rgb(planes: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(..., 3H/2, W) uint8 I420 planes -> (..., H, W, 3) uint8 RGB, resized to ``size`` = (height, width).

    Runs on the planes' device, in int32. Resizing uses the reference's bilinear arithmetic
    (``linear_resize``).
    """
    rows, width = planes.shape[-2:]
    height = rows * 2 // 3
    lead = planes.shape[:-2]
    flat = planes.reshape(*lead, rows * width).to(torch.int32)
    luma = flat[..., : height * width].reshape(*lead, height, width)
    chroma = flat[..., height * width :].reshape(*lead, 2, height // 2, width // 2)
    y = ((luma - 16) * (8 * _Y_COEF)) >> 16
    u, v = chroma[..., 0, :, :], chroma[..., 1, :, :]
    u, v = (u - 128) * 8, (v - 128) * 8
    # Each chroma sample stands for its 2x2 pixels.
    red = _upsample((v * _VR_COEF) >> 16)
    green = _upsample(((u * _UG_COEF) >> 16) + ((v * _VG_COEF) >> 16))
    blue = _upsample((u * _UB_COEF) >> 16)
    rgb = torch.stack([y + red, y + green, y + blue], dim=-1).clamp_(0, 255).to(torch.uint8)
    if size is not None and tuple(size) != (height, width):
        rgb = linear_resize(rgb, size)
    return rgb


def _upsample(chroma: torch.Tensor) -> torch.Tensor:
    return chroma.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


@functools.cache
def _taps(src: int, dst: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(device) for a in linear_taps(src, dst))


def linear_resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W, C) uint8 frames resized to ``size`` = (height, width) as OpenCV's INTER_LINEAR does.

    The torch twin of ``store.codecs.LinearResize`` (same taps, same integer steps and shifts), so
    it gives its pixels exactly, on any device.
    """
    height, width = size
    src_h, src_w = frames.shape[-3:-1]
    x0, x1, a0, a1 = _taps(src_w, width, frames.device)
    y0, y1, b0, b1 = _taps(src_h, height, frames.device)
    source = frames.to(torch.int32)
    a0, a1 = a0[:, None], a1[:, None]
    horizontal = (source.index_select(-2, x0) * a0 + source.index_select(-2, x1) * a1) >> 4
    b0, b1 = b0[:, None, None], b1[:, None, None]
    top = (horizontal.index_select(-3, y0) * b0) >> 16
    bottom = (horizontal.index_select(-3, y1) * b1) >> 16
    out = (top + bottom + 2) >> 2
    one = 1 << COEF_BITS
    if bool((a0 + a1 > one).any() or (b0 + b1 > one).any()):
        out = out.clamp_(0, 255)
    return out.to(torch.uint8)
