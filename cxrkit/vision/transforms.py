"""Image transforms for chest X-ray pretraining and evaluation (torch, single channel).

Both transforms take a stored radiograph, a uint8/uint16 tensor (H, W) with
bright = bone, and return a float tensor (1, S, S) normalised to [-1, 1] by
``(x / maxval - CXR_MEAN) / CXR_STD``. Geometry is that of a letterbox: the long
side fits the square output and the short side is padded with black (0 before
normalisation, -1 after), so the anatomy keeps its aspect ratio.

``TrainTransform`` adds a random affine on top (zoom crop, small aspect change,
shift, rotation) and photometric jitter (brightness, contrast), all drawn from
the ``torch.Generator`` passed in, so a seed fixes every augmentation. The
image and its chest-contour mask go through the same sampling grid (bilinear
for the image, nearest for the mask) and therefore stay aligned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cxrkit.config import doc
from cxrkit.errors import ConfigError, InputError
from cxrkit.vision.normalise import CXR_MEAN, CXR_STD

_MAXVAL = {torch.uint8: 255.0, torch.uint16: 65535.0}
# (x - MEAN) / STD == x * _GAIN - _SHIFT: the train path folds _GAIN into its box filter.
_GAIN, _SHIFT = 1.0 / CXR_STD, CXR_MEAN / CXR_STD


@dataclass
class AugmentConfig:
    """Training augmentation (``[data.augment]`` in pretrain configs).

    Conservative on purpose: chest X-rays are standardised views, and heavy crops
    or rotations teach invariances that do not occur in the clinic.
    """

    scale_min: float = doc(
        "smallest crop, as a fraction of the letterboxed (square) image area; the crop is "
        "placed at random where it fits inside the image, as RandomResizedCrop does",
        0.6,
    )
    scale_max: float = doc("largest crop, as a fraction of the letterboxed image area", 1.0)
    ratio_min: float = doc("smallest crop aspect ratio (width / height), drawn log-uniformly", 0.9)
    ratio_max: float = doc("largest crop aspect ratio (width / height)", 1.1)
    rotate_deg: float = doc("largest rotation either way, in degrees", 10.0)
    translate: float = doc(
        "largest extra shift of the crop centre beyond its free placement, as a fraction "
        "of the image side (may bring in black border)",
        0.05,
    )
    brightness: float = doc("largest additive brightness change, in [0, 1] intensity units", 0.1)
    contrast: float = doc("largest relative contrast change about the image mean", 0.1)
    hflip: bool = doc(
        "random horizontal flips; off by default because the heart and aortic knob sit on "
        "the patient's left and a flipped film shows situs inversus, which is not a "
        "label-preserving change",
        False,
    )

    def validate(self) -> None:
        """Raise ConfigError naming the setting when a value is out of range."""
        checks = [
            ("scale_min", 0.0 < self.scale_min <= self.scale_max, "0 < scale_min <= scale_max"),
            ("scale_max", self.scale_max <= 1.0, "scale_max <= 1"),
            ("ratio_min", 0.0 < self.ratio_min <= self.ratio_max, "0 < ratio_min <= ratio_max"),
            ("rotate_deg", 0.0 <= self.rotate_deg <= 180.0, "0 <= rotate_deg <= 180"),
            ("translate", 0.0 <= self.translate <= 0.5, "0 <= translate <= 0.5"),
            ("brightness", 0.0 <= self.brightness <= 1.0, "0 <= brightness <= 1"),
            ("contrast", 0.0 <= self.contrast < 1.0, "0 <= contrast < 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"data.augment.{name} = {getattr(self, name)!r}: need {rule}")

    def __post_init__(self) -> None:
        self.validate()


def _as_image(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The image as a tensor (H, W) of a supported dtype; InputError otherwise."""
    tensor = torch.as_tensor(image)
    if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise InputError(f"expected a grey image (H, W), got shape {tuple(tensor.shape)}")
    if tensor.dtype not in _MAXVAL and not tensor.dtype.is_floating_point:
        raise InputError(f"image dtype {tensor.dtype} not supported: store uint8 or uint16 pixels")
    return tensor


def to_unit(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A stored radiograph as float32 (H, W) in [0, 1]: integers divided by their dtype max.

    Takes uint8, uint16 (max 65535) or float (taken as already in [0, 1] and
    clamped, NaN -> 0) tensors or arrays of shape (H, W). Returns a new tensor.
    Raises InputError for other dtypes or shapes.
    """
    tensor = _as_image(image)
    if tensor.dtype in _MAXVAL:
        return tensor.to(torch.float32).div_(_MAXVAL[tensor.dtype])
    return tensor.to(torch.float32).nan_to_num(0.0).clamp_(0.0, 1.0)


def _check_contour(
    contour: torch.Tensor | np.ndarray | None, shape: torch.Size
) -> torch.Tensor | None:
    if contour is None:
        return None
    mask = torch.as_tensor(contour)
    if tuple(mask.shape) != tuple(shape):
        raise InputError(
            f"contour mask {tuple(mask.shape)} does not match the image {tuple(shape)}; "
            "the annotations were made for another version of this dataset"
        )
    return mask


def _box_reduce(values: torch.Tensor, factor: int, scale: float) -> torch.Tensor:
    """(H, W) -> (H // factor, W // factor) float32: mean of factor x factor blocks, times ``scale``.

    Summing strided slices (in numpy, which is faster than torch at these
    sizes on one core; ~4x faster than ``avg_pool2d`` or antialiased
    ``interpolate``) is exact box filtering. The last ``H % factor`` rows and
    ``W % factor`` columns are dropped (under one output pixel). ``values`` may
    be uint8/uint16/float32.
    """
    array = values.numpy()
    if factor == 1:
        total = array.astype(np.float32)  # a copy: the caller modifies the source in place
        total *= scale
        return torch.from_numpy(total)
    height, width = (array.shape[0] // factor) * factor, (array.shape[1] // factor) * factor
    total = array[0:height:factor, 0:width:factor].astype(np.float32)
    for dy in range(factor):
        for dx in range(factor):
            if dy or dx:
                total += array[dy:height:factor, dx:width:factor]
    total *= scale / factor**2
    return torch.from_numpy(total)


def _normalise(unit: torch.Tensor) -> torch.Tensor:
    """In place: [0, 1] -> (x - CXR_MEAN) / CXR_STD."""
    return unit.sub_(CXR_MEAN).div_(CXR_STD)


class EvalTransform:
    """Resize the long side to ``size`` keeping the aspect ratio, centre-pad to a square.

    Called as ``t(image, contour=None, generator=None)`` with the
    ``TrainTransform`` signature (the generator is ignored: nothing is random).
    Returns (float32 (1, size, size) in [-1, 1], bool (size, size) | None). The
    padding is black: 0 in [0, 1] units, -1 after normalisation; the mask is
    resized with nearest neighbour and padded with False.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigError(f"image_size = {size}: must be a positive number of pixels")
        self.size = int(size)

    def _geometry(
        self, height: int, width: int
    ) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        scale = self.size / max(height, width)
        new_h = min(self.size, max(1, round(height * scale)))
        new_w = min(self.size, max(1, round(width * scale)))
        top, left = (self.size - new_h) // 2, (self.size - new_w) // 2
        # F.pad order: (left, right, top, bottom)
        return (new_h, new_w), (left, self.size - new_w - left, top, self.size - new_h - top)

    def __call__(
        self,
        image: torch.Tensor | np.ndarray,
        contour: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unit = to_unit(image)
        mask = _check_contour(contour, unit.shape)
        size, padding = self._geometry(*unit.shape)
        resized = F.interpolate(
            unit[None, None], size=size, mode="bilinear", antialias=True, align_corners=False
        )
        out = F.pad(resized.clamp_(0.0, 1.0), padding, value=0.0)[0]  # (1, S, S)
        out_mask = None
        if mask is not None:
            small = F.interpolate(mask[None, None].to(torch.uint8), size=size, mode="nearest-exact")
            out_mask = F.pad(small, padding, value=0)[0, 0].bool()  # (S, S)
        return _normalise(out), out_mask


class TrainTransform:
    """Random letterboxed crop + rotation + brightness/contrast jitter, image and mask alike.

    ``TrainTransform(cfg, size)(image, contour, generator)`` returns (float32 (1,
    size, size) in [-1, 1], bool (size, size) | None). Every random number comes
    from ``generator`` (the global torch RNG when None): the same seed gives the
    same output. Regions the crop or rotation brings in from outside the film
    are black.
    """

    def __init__(self, cfg: AugmentConfig, size: int) -> None:
        if size < 1:
            raise ConfigError(f"image_size = {size}: must be a positive number of pixels")
        cfg.validate()
        self.cfg, self.size = cfg, int(size)
        # Output pixel centres in normalised coordinates (align_corners=False).
        self._line = ((np.arange(self.size) * 2 + 1) / self.size - 1).astype(np.float32)
        # Long side of the source (at scale_max) that maps 1:1 onto the output.
        self._source_long = self.size / math.sqrt(cfg.scale_max)

    def _grid(self, theta: list[list[float]]) -> torch.Tensor:
        """(1, S, S, 2) sampling grid of ``theta``, by broadcasting (no (S*S, 3) matmul)."""
        grid = np.empty((1, self.size, self.size, 2), dtype=np.float32)
        line = self._line
        for axis, (a, b, c) in enumerate(theta):
            np.add((a * line)[None, :], (b * line + c)[:, None], out=grid[0, ..., axis])
        return torch.from_numpy(grid)

    def _theta(self, height: int, width: int, uniform: list[float]) -> list[list[float]]:
        """(2, 3) affine from output coordinates to the input's normalised coordinates.

        Composition, from output to input: flip, crop size (area and aspect),
        rotation, crop centre (free placement inside the image plus the
        ``translate`` shift), then the letterbox frame (the long side spans
        [-1, 1]). ``uniform`` holds the call's 10 draws in [0, 1).
        """
        cfg = self.cfg
        area = cfg.scale_min + (cfg.scale_max - cfg.scale_min) * uniform[0]
        log_ratio = math.log(cfg.ratio_min) + math.log(cfg.ratio_max / cfg.ratio_min) * uniform[1]
        ratio = math.exp(log_ratio)
        half_w, half_h = math.sqrt(area * ratio), math.sqrt(area / ratio)  # crop half-extents
        angle = math.radians(cfg.rotate_deg * (2 * uniform[2] - 1))
        long_side = max(height, width)
        frame_x, frame_y = long_side / width, long_side / height
        # The image spans +-1/frame in the letterbox; a smaller crop may sit anywhere inside.
        place_x = max(0.0, 1 / frame_x - half_w) * (2 * uniform[8] - 1)
        place_y = max(0.0, 1 / frame_y - half_h) * (2 * uniform[9] - 1)
        shift_x = place_x + 2 * cfg.translate * (2 * uniform[3] - 1)  # the side is 2 units
        shift_y = place_y + 2 * cfg.translate * (2 * uniform[4] - 1)
        flip = -1.0 if cfg.hflip and uniform[5] < 0.5 else 1.0
        cos, sin = math.cos(angle), math.sin(angle)
        return [
            [frame_x * cos * half_w * flip, -frame_x * sin * half_h, frame_x * shift_x],
            [frame_y * sin * half_w * flip, frame_y * cos * half_h, frame_y * shift_y],
        ]

    def _jitter(self, uniform: list[float]) -> tuple[float, float]:
        """(contrast, brightness) factors of this call: x -> contrast * (x - mean) + mean + brightness."""
        cfg = self.cfg
        return 1.0 + cfg.contrast * (2 * uniform[6] - 1), cfg.brightness * (2 * uniform[7] - 1)

    def _source(self, image: torch.Tensor, factor: int, uniform: list[float]) -> torch.Tensor:
        """(h, w) source for sampling: box-shrunk, jittered, in [0, _GAIN] (x / CXR_STD).

        The normalisation gain 1 / CXR_STD and the contrast gain ride along with
        the box filter's scale, saving passes over the image; only the shift
        -CXR_MEAN / CXR_STD is left for the output. Jitter happens before
        sampling so that the black padding stays black.
        """
        contrast, brightness = self._jitter(uniform)
        gain = _GAIN * contrast
        if image.dtype in _MAXVAL:
            source = _box_reduce(image, factor, gain / _MAXVAL[image.dtype])
        else:
            source = _box_reduce(to_unit(image), factor, gain)
        if contrast == 1.0 and brightness == 0.0:
            return source
        # source = gain * x has mean gain * m; shift it to _GAIN * (m + brightness)
        offset = float(source.mean()) * (1.0 - contrast) / contrast + _GAIN * brightness
        return source.add_(offset).clamp_(0.0, _GAIN)

    def _shrink_factor(self, height: int, width: int) -> int:
        """Box factor so that bilinear sampling of the source reduces by less than 2x."""
        return max(1, int(max(height, width) // self._source_long))

    def __call__(
        self,
        image: torch.Tensor | np.ndarray,
        contour: torch.Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = _as_image(image)
        mask = _check_contour(contour, image.shape)
        factor = self._shrink_factor(*image.shape)
        # Both inputs are cut to whole factor x factor blocks so they cover the same area.
        height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
        uniform = torch.rand(10, generator=generator).tolist()
        source = self._source(image, factor, uniform)  # (h, w), values in [0, _GAIN]
        grid = self._grid(self._theta(height, width, uniform))  # (1, S, S, 2)
        out = F.grid_sample(
            source[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out = out[0].sub_(_SHIFT)  # (1, S, S) in [-1, 1]: padding 0 -> -CXR_MEAN / CXR_STD
        out_mask = None
        if mask is not None:
            # nearest neighbour: the centre pixel of each block is as good as the block
            centre = factor // 2
            blocks = mask.numpy()[centre:height:factor, centre:width:factor]
            sampled = F.grid_sample(
                torch.from_numpy(blocks.astype(np.float32))[None, None],
                grid,
                mode="nearest",
                padding_mode="zeros",
                align_corners=False,
            )
            out_mask = sampled[0, 0] > 0.5  # (S, S)
        return out, out_mask
