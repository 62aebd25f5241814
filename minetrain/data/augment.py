"""Video augmentation (``data_params.enable_video_aug``): the reference's kinds, one draw per window.

The reference (MineStudio's image callback) draws one colour jitter and one affine warp per window
and applies the same ones to every frame, so the motion between frames, which the actions explain,
is left as it was. The kinds and ranges are the reference's:

* colour jitter, its four steps in a random order: brightness, contrast and saturation factors in
  [0.8, 1.2], hue shifted by up to 0.1 of a turn either way;
* affine warp about the frame centre: rotation in [-4, 2] degrees (positive = counter-clockwise on
  screen), scale in [0.98, 1.02], shear in [-2, 2] degrees along each axis (positive x shear moves
  the rows below the centre left), bilinear, black outside; directions as the reference's library.

Our own implementation in torch: hue turns colours about the grey axis of RGB (a rotation that
keeps brightness and saturation, close to an HSV hue shift), contrast blends with the mean grey of
each frame, saturation with each pixel's grey. Draws come from a generator of (seed, epoch, window),
so an epoch's augmented frames are the same after a resume. Only frames are augmented, as in the
reference: the condition mask (``segment.obj_mask``) is not warped with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma, the grey of colour-jitter implementations.
_GREY = torch.tensor([[0.299, 0.587, 0.114]])
_AUGMENT_STREAM = 1  # keeps these draws apart from the conditioning draws of the same item


@dataclass(frozen=True)
class VideoAugmentation:
    """One window's draw: colour factors, their order, and the affine warp."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # fraction of a turn
    order: tuple[int, ...] = (0, 1, 2, 3)  # indices into (brightness, contrast, saturation, hue)
    rotate: float = 0.0  # degrees
    scale: float = 1.0
    shear: tuple[float, float] = (0.0, 0.0)  # degrees along x, y

    @classmethod
    def draw(cls, seed: int, epoch: int, index: int) -> VideoAugmentation:
        """The draw of window ``index`` in ``epoch``: a pure function of its arguments."""
        rng = np.random.default_rng([int(seed), int(epoch), int(index), _AUGMENT_STREAM])
        brightness, contrast, saturation = (float(v) for v in rng.uniform(0.8, 1.2, size=3))
        return cls(
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
            hue=float(rng.uniform(-0.1, 0.1)),
            order=tuple(int(i) for i in rng.permutation(4)),
            rotate=float(rng.uniform(-4.0, 2.0)),
            scale=float(rng.uniform(0.98, 1.02)),
            shear=(float(rng.uniform(-2.0, 2.0)), float(rng.uniform(-2.0, 2.0))),
        )

    def apply(self, frames: np.ndarray) -> None:
        """Augment (T, H, W, 3) uint8 frames in place."""
        if not len(frames):
            return
        with torch.no_grad():
            # Channels first: every step then works on whole contiguous planes.
            x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().contiguous()
            for step in self.order:
                x = self._colour_step(x, step).clamp_(0.0, 255.0)
            x = self._warp(x)
            out = x.round_().clamp_(0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)
            torch.from_numpy(frames).copy_(out)

    def _colour_step(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if step == 0:
            return x.mul_(self.brightness)
        if step == 3:
            return _mix(x, _hue_rotation(self.hue))
        grey = _mix(x, _GREY)
        if step == 1:
            mean = grey.mean(dim=(1, 2, 3), keepdim=True)
            return x.sub_(mean).mul_(self.contrast).add_(mean)
        return x.sub_(grey).mul_(self.saturation).add_(grey)

    def _warp(self, x: torch.Tensor) -> torch.Tensor:
        if self.rotate == 0.0 and self.scale == 1.0 and self.shear == (0.0, 0.0):
            return x
        height, width = x.shape[2:]
        angle = math.radians(self.rotate)
        cos, sin = math.cos(angle), math.sin(angle)
        # Forward map in pixel coordinates about the centre (y down): rotate, scale, shear.
        rotation = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64)
        shear = torch.tensor(
            [[1.0, -math.tan(math.radians(self.shear[0]))], [-math.tan(math.radians(self.shear[1])), 1.0]],
            dtype=torch.float64,
        )
        inverse = torch.linalg.inv(rotation @ shear * self.scale)
        # affine_grid samples with normalised coordinates, x and y each scaled to [-1, 1].
        to_unit = torch.diag(torch.tensor([2.0 / width, 2.0 / height], dtype=torch.float64))
        to_pixels = torch.diag(torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64))
        theta = torch.zeros(len(x), 2, 3)
        theta[:, :, :2] = (to_unit @ inverse @ to_pixels).float()
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _mix(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Output channel i = sum_k matrix[i, k] * input channel k, of (T, 3, H, W) frames."""
    rows = [sum(float(w) * x[:, k] for k, w in enumerate(row)) for row in matrix]
    return torch.stack(rows, dim=1)


def _hue_rotation(turns: float) -> torch.Tensor:
    """The 3x3 RGB matrix turning colours by ``turns`` of a full turn about the grey axis."""
    angle = 2.0 * math.pi * turns
    cos, sin = math.cos(angle), math.sin(angle)
    axis = torch.full((3,), 1.0 / math.sqrt(3.0), dtype=torch.float64)
    cross = torch.tensor(
        [[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]], dtype=torch.float64
    )
    rotation = cos * torch.eye(3, dtype=torch.float64) + sin * cross + (1 - cos) * torch.outer(axis, axis)
    return rotation.float()
