"""Checks on what the policy is fed, so bad input fails with one clear line instead of deep inside torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from minetrain.errors import ConfigError
from minetrain.models.frames import i420_to_rgb

# The interaction embedding has 10 slots for obj_id + 1, so obj_id lies in [-1, 8].
MIN_OBJ_ID, MAX_OBJ_ID = -1, 8
_MASK_DTYPES = (torch.uint8, torch.bool)


@dataclass(frozen=True)
class PolicyInput:
    """Validated tensors: image (B,T,H,W,3) uint8, mask (B,T,H,W), obj_id (B,T) long, first (B,T) bool."""

    image: torch.Tensor
    mask: torch.Tensor
    obj_id: torch.Tensor
    first: torch.Tensor


def _tensor(value: object, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"batch[{name!r}] must be a tensor or array, got {type(value).__name__}") from exc


def check_interaction_ids(obj_id: torch.Tensor) -> None:
    """Interaction types lie in [-1, 8]. Reading the values waits for the device that holds them, so
    this runs on host tensors: ``parse_batch`` checks host batches, ``MineLightning`` checks each
    training batch before it is moved to the device."""
    if obj_id.numel() and (int(obj_id.min()) < MIN_OBJ_ID or int(obj_id.max()) > MAX_OBJ_ID):
        raise ConfigError(
            f"batch['segment']['obj_id'] has values in [{int(obj_id.min())}, {int(obj_id.max())}]; "
            f"expected interaction types in [{MIN_OBJ_ID}, {MAX_OBJ_ID}] (-1 = none)"
        )


def _image(batch: Mapping) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """``batch['image']``, and for I420 planes the (height, width) its RGB frames are to have."""
    if "image" not in batch:
        raise ConfigError(f"batch has no 'image' (keys: {sorted(batch)}); expected (B,T,H,W,3) uint8 frames")
    image = _tensor(batch["image"], "image")
    if image.ndim == 4 and image.dtype == torch.uint8:
        return image, _frame_size(batch, image)
    if image.ndim != 5 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ConfigError(
            f"batch['image'] is {tuple(image.shape)} {image.dtype}; expected (B,T,H,W,3) uint8 RGB frames "
            "or (B,T,3H/2,W) uint8 I420 planes"
        )
    return image, None


def frame_size_of(size: object) -> tuple[int, int]:
    """``batch['frame_size']`` ((height, width) per window, all equal) as one (height, width).

    Reading a tensor waits for the device that holds it, so ``MineLightning`` turns it into this
    tuple on the host copy of each batch, before the batch moves to the device."""
    if isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return size
    size = _tensor(size, "frame_size")
    sizes = size.reshape(-1, 2) if size.shape[-1:] == (2,) and not size.is_floating_point() else None
    if sizes is None or len(sizes) == 0 or bool((sizes != sizes[0]).any()) or int(sizes.min()) < 1:
        raise ConfigError(
            f"batch['frame_size'] is {tuple(size.shape)} {size.dtype}; expected (height, width) "
            "positive integers per window, the same for every window"
        )
    height, width = (int(v) for v in sizes[0])
    return height, width


def _frame_size(batch: Mapping, planes: torch.Tensor) -> tuple[int, int]:
    """(height, width) the I420 frames are to have: ``batch['frame_size']`` if given, else their own."""
    rows, width = planes.shape[-2:]
    if rows % 3 or width % 2:
        raise ConfigError(
            f"batch['image'] is {tuple(planes.shape)}; expected (B,T,H,W,3) uint8 RGB frames "
            "or (B,T,3H/2,W) uint8 I420 planes (H and W even)"
        )
    size = batch.get("frame_size")
    return (rows * 2 // 3, width) if size is None else frame_size_of(size)


def _rgb(image: torch.Tensor, frame_size: tuple[int, int] | None, device: torch.device) -> torch.Tensor:
    """``image`` on ``device`` as (B,T,H,W,3) RGB: I420 planes are converted (and resized) there."""
    image = image.to(device, non_blocking=True)
    return image if frame_size is None else i420_to_rgb(image, frame_size)


def _first(batch: Mapping, b: int, t: int) -> torch.Tensor:
    first = batch.get("first")
    if first is None:
        return torch.zeros(b, t, dtype=torch.bool)
    first = _tensor(first, "first")
    if tuple(first.shape) != (b, t):
        raise ConfigError(f"batch['first'] is {tuple(first.shape)}; expected {(b, t)} booleans")
    return first


def parse_frames(batch: Mapping, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the frames and episode flags of a batch (policies without conditioning) and move them
    to ``device``: image (B,T,H,W,3) uint8 RGB (made from I420 planes there when given those) and
    first (B,T) bool, all False when absent."""
    image, frame_size = _image(batch)
    first = _first(batch, *image.shape[:2])
    return _rgb(image, frame_size, device), first.to(device, torch.bool, non_blocking=True)


def parse_batch(batch: Mapping, device: torch.device) -> PolicyInput:
    """Validate a training/inference batch and move it to ``device``.

    ``image`` is (B,T,H,W,3) uint8 RGB, or (B,T,3H/2,W) uint8 I420 planes (``image_format="yuv420"``)
    that are made RGB on ``device`` and resized to ``batch['frame_size']`` (height, width per
    window) if given (``frames.i420_to_rgb``), so every policy gets RGB frames either way.

    ``segment`` (or the reference's ``segmentation``) may be absent: the policy then runs
    unconditioned (obj_id -1, empty mask). ``first`` defaults to all False. Nothing here waits
    for the device: the values of ``obj_id`` are checked only when it is on the host.
    """
    image, frame_size = _image(batch)
    b, t = image.shape[:2]
    h, w = frame_size if frame_size is not None else image.shape[2:4]
    segment = batch.get("segment", batch.get("segmentation"))
    if segment is None:
        mask = torch.zeros(b, t, h, w, dtype=torch.uint8, device=device)
        obj_id = torch.full((b, t), MIN_OBJ_ID, dtype=torch.long, device=device)
    else:
        mask = _tensor(segment["obj_mask"], "segment.obj_mask")
        obj_id = _tensor(segment["obj_id"], "segment.obj_id")
    if tuple(mask.shape) != (b, t, h, w) or not (mask.dtype in _MASK_DTYPES or mask.is_floating_point()):
        raise ConfigError(
            f"batch['segment']['obj_mask'] is {tuple(mask.shape)} {mask.dtype}; expected {(b, t, h, w)} "
            "uint8/bool, the size of the frames"
        )
    if tuple(obj_id.shape) != (b, t) or obj_id.is_floating_point() or obj_id.dtype == torch.bool:
        raise ConfigError(
            f"batch['segment']['obj_id'] is {tuple(obj_id.shape)} {obj_id.dtype}; expected {(b, t)} integers"
        )
    if obj_id.device.type == "cpu":
        check_interaction_ids(obj_id)
    first = _first(batch, b, t)
    return PolicyInput(
        image=_rgb(image, frame_size, device),
        mask=mask.to(device, non_blocking=True),
        obj_id=obj_id.to(device, torch.long, non_blocking=True),
        first=first.to(device, torch.bool, non_blocking=True),
    )


def check_memory(
    memory: Sequence[torch.Tensor], batch_size: int, expected: Sequence[tuple[int, ...]]
) -> None:
    """Fail clearly when ``memory`` was made for another batch size or another model shape."""
    if not isinstance(memory, Sequence) or len(memory) != len(expected):
        n = len(memory) if isinstance(memory, Sequence) else type(memory).__name__
        raise ConfigError(
            f"memory has {n} tensors; expected {len(expected)} (3 per recurrent layer) from initial_state()"
        )
    for i, (tensor, shape) in enumerate(zip(memory, expected, strict=True)):
        if tensor.shape[0] != batch_size:
            raise ConfigError(
                f"memory[{i}] is for batch size {tensor.shape[0]} but the batch has {batch_size} samples; "
                f"pass memory=None or initial_state({batch_size})"
            )
        if tuple(tensor.shape[1:]) != shape:
            raise ConfigError(
                f"memory[{i}] has shape {tuple(tensor.shape)}; expected {(batch_size, *shape)} for this model"
            )


def carried_memory(
    memory: Sequence[torch.Tensor] | None,
    batch_size: int,
    expected: Sequence[tuple[int, ...]],
    initial: Callable[[int], list[torch.Tensor]],
    device: torch.device,
) -> list[torch.Tensor]:
    """The memory a policy call starts from: ``initial(batch_size)`` when None, else ``memory`` checked
    against the per-sample shapes ``expected`` and moved to ``device``."""
    if memory is None:
        return initial(batch_size)
    check_memory(memory, batch_size, expected)
    return [m.to(device) for m in memory]


def add_step_axis(value: object, single: bool) -> torch.Tensor:
    """One step of one environment (no leading axes) or of N (leading N) as a (N, 1, ...) batch."""
    value = torch.as_tensor(value)
    return value[None, None] if single else value[:, None]


def step_batch(obs: Mapping) -> tuple[dict[str, torch.Tensor], bool]:
    """One step's ``obs`` (no time axis) as a one-step batch: ``image`` (H,W,3) for one environment or
    (N,H,W,3) for N as (N,1,H,W,3), ``first`` (if given) as (N,1); and whether it was a single
    environment. What ``get_action`` of every policy starts from."""
    image = torch.as_tensor(obs["image"]) if "image" in obs else None
    if image is None or image.ndim not in (3, 4):
        shape = None if image is None else tuple(image.shape)
        raise ConfigError(f"obs['image'] is {shape}; expected (H,W,3) for one env or (N,H,W,3) for N envs")
    single = image.ndim == 3
    batch = {"image": add_step_axis(image, single)}
    if obs.get("first") is not None:
        batch["first"] = add_step_axis(obs["first"], single)
    return batch, single
