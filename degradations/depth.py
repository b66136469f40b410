"""Scene depth for the haze synthesizer.

Haze follows the atmospheric scattering model ``I = J t + A (1 - t)`` with transmission
``t = exp(-beta d)``, so it needs a depth map ``d`` per image. Every depth map here is
``(B, 1, H, W)`` in ``[0, 1]``, normalised per image, ``0`` = nearest, ``1`` = farthest.

Two sources provide it:

* **Depth Anything V2** (``transformers``), loaded only from a local folder or the local
  Hugging Face cache; nothing is ever downloaded.
* **heuristic-v1** (:func:`heuristic_depth`), an offline estimate used when no weights
  are present.

:class:`DepthEstimator` picks the source, :class:`DepthCache` keeps computed maps on disk.
The ``source`` string of the estimator names what produced a map and belongs in manifests.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import kornia
import numpy as np
import torch
import torch.nn.functional as F

from .io import write_bytes_atomic

DEFAULT_DEPTH_MODEL_ENV = "ALLINONE_DEPTH_MODEL"
HF_REPO_ID = "depth-anything/Depth-Anything-V2-Small-hf"
HEURISTIC_SOURCE = "heuristic-v1"
DEPTH_ANYTHING_SOURCE_PREFIX = "depth-anything-v2"
WEIGHTS_NOT_FOUND_MESSAGE = (
    f"Depth Anything V2 weights not found (set {DEFAULT_DEPTH_MODEL_ENV}=/path); using the heuristic depth"
)

logger = logging.getLogger("degradations")

# Messages already logged by this process: a missing model is reported once, not per image.
_logged_messages: set[str] = set()

# Short side of the grid the heuristic works on. Depth cues are low-frequency, so a coarse
# grid loses nothing that the final smoothing would keep, and keeps the cost independent of H, W.
_TEXTURE_SHORT_SIDE = 160
_WORK_SHORT_SIDE = 64

# Colour attenuation prior (Zhu, Mai & Shao, 2015): depth ~ theta0 + theta1 * value + theta2 * saturation.
_CAP_THETA = (0.121779, 0.959710, -0.780245)

# Weights of the heuristic's cues: vertical position, lack of texture, colour attenuation prior.
_CUE_WEIGHTS_RGB = (0.5, 0.25, 0.25)
# A single-channel image may be infrared, where brightness means heat, not distance: no colour cue.
_CUE_WEIGHTS_GRAY = (0.6, 0.4, 0.0)


def _log_once(level: int, message: str) -> None:
    if message not in _logged_messages:
        _logged_messages.add(message)
        logger.log(level, message)


def _check_image(rgb: torch.Tensor) -> None:
    if rgb.ndim != 4 or rgb.shape[1] not in (1, 3):
        raise ValueError(f"expected a (B, C, H, W) image with C in {{1, 3}}, got shape {tuple(rgb.shape)}")


def _normalise_per_image(x: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each image of a (B, 1, H, W) map to [0, 1]; a constant map becomes 0."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    return ((x - low) / (high - low).clamp_min(1e-8)).clamp(0.0, 1.0)


def _shrink(x: torch.Tensor, short_side: int) -> torch.Tensor:
    """Area-downsample so that the short side is at most ``short_side`` (never upsamples)."""
    height, width = x.shape[-2:]
    scale = min(1.0, short_side / min(height, width))
    if scale == 1.0:
        return x
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(x, size=size, mode="area")


def heuristic_depth(rgb: torch.Tensor) -> torch.Tensor:
    """Estimate a normalised depth map from single-image cues, without any learned weights.

    Design (``heuristic-v1``), computed on a coarse grid (short side 64 px) and upsampled:

    1. **Ground-plane prior**: in photographs taken roughly level, the ground recedes towards the
       horizon, so lower rows are nearer; far-ness grows linearly from the bottom row (0) to the
       top row (1).
    2. **Texture density**: detail is resolved only near the camera and is washed out with
       distance, so the local mean of the luminance gradient magnitude (Sobel at short side
       160 px, area-pooled to the grid and box-averaged) marks near regions. It is divided by its
       95th percentile per image, and ``1 - density`` is used as far-ness.
    3. **Colour attenuation prior** (Zhu et al., 2015), RGB only: distant scene points and the
       sky are bright and unsaturated, ``d = 0.122 + 0.960 V - 0.780 S`` with HSV value ``V``
       and saturation ``S``. Single-channel input may be infrared, where brightness is heat,
       so this cue is dropped there and its weight given to the other two.

    The cues are mixed with weights 0.5 / 0.25 / 0.25 (gray: 0.6 / 0.4 / 0), smoothed with an
    edge-aware guided filter (guide: luminance) so that depth steps follow object boundaries,
    min-max normalised per image and upsampled bilinearly to ``(H, W)``. All operations are
    deterministic; the cost (about 6 ms for 640x480 RGB on one CPU core) is dominated by the
    area downsampling of the input and the final upsampling.

    Args:
        rgb: ``(B, C, H, W)`` image in ``[0, 1]``, ``C`` = 1 or 3.

    Returns:
        ``(B, 1, H, W)`` depth in ``[0, 1]``, 0 = nearest, 1 = farthest, in ``rgb``'s dtype.
    """
    _check_image(rgb)
    height, width = rgb.shape[-2:]
    image = rgb.float().clamp(0.0, 1.0)
    texture_grid = _shrink(image, _TEXTURE_SHORT_SIDE)
    grid = _shrink(texture_grid, _WORK_SHORT_SIDE)
    grid_size = grid.shape[-2:]
    is_rgb = image.shape[1] == 3

    luminance = kornia.color.rgb_to_grayscale(texture_grid) if is_rgb else texture_grid
    gradient = kornia.filters.sobel(luminance)
    window = 2 * (min(grid_size) // 16) + 1
    density = kornia.filters.box_blur(F.interpolate(gradient, size=grid_size, mode="area"), window, "replicate")
    scale = torch.quantile(density.flatten(1), 0.95, dim=1).clamp_min(1e-6)
    untextured = 1.0 - (density / scale[:, None, None, None]).clamp(0.0, 1.0)

    rows = torch.linspace(1.0, 0.0, grid_size[0], device=image.device)
    elevation = rows.view(1, 1, -1, 1).expand_as(untextured)

    w_elevation, w_texture, w_colour = _CUE_WEIGHTS_RGB if is_rgb else _CUE_WEIGHTS_GRAY
    farness = w_elevation * elevation + w_texture * untextured
    if is_rgb:
        value = grid.amax(dim=1, keepdim=True)
        saturation = (value - grid.amin(dim=1, keepdim=True)) / value.clamp_min(1e-6)
        theta0, theta1, theta2 = _CAP_THETA
        farness = farness + w_colour * (theta0 + theta1 * value + theta2 * saturation).clamp(0.0, 1.0)

    guide = kornia.color.rgb_to_grayscale(grid) if is_rgb else grid
    smooth = kornia.filters.guided_blur(
        guide, farness, 2 * window + 1, eps=1e-2, border_type="replicate", separable=True
    )
    depth = F.interpolate(_normalise_per_image(smooth), size=(height, width), mode="bilinear", align_corners=False)
    return depth.clamp(0.0, 1.0).to(rgb.dtype)


def _cached_hf_snapshot() -> Path | None:
    """Folder of ``HF_REPO_ID`` in the local Hugging Face cache, or None; never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(HF_REPO_ID, local_files_only=True))
    except LocalEntryNotFoundError:
        return None


class DepthEstimator:
    """Depth maps from Depth Anything V2 when its weights are available locally, else from the heuristic.

    Depth Anything's relative models predict affine-invariant inverse depth (disparity), whose
    unknown shift makes ``1 / disparity`` meaningless, so the disparity is min-max normalised per
    image and flipped: ``depth = 1 - disparity_normalised``. This keeps the haze gradient spread
    over the whole scene instead of concentrating it in the sky. Metric checkpoints
    (``depth_estimation_type == "metric"``) already predict depth and are only normalised.

    Build one with :meth:`load`; ``DepthEstimator()`` is the heuristic.
    """

    def __init__(self, model: torch.nn.Module | None = None, processor=None, source: str = HEURISTIC_SOURCE):
        if (model is None) != (processor is None):
            raise ValueError("a Depth Anything model needs its image processor, and vice versa")
        self.model = model.eval() if model is not None else None
        self.processor = processor
        self.source = source

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, fallback: bool = True) -> DepthEstimator:
        """Load Depth Anything V2 from local files only.

        ``path`` given: load from that folder. ``path`` None: the folder named by the
        ``ALLINONE_DEPTH_MODEL`` environment variable, else ``HF_REPO_ID`` in the local
        Hugging Face cache. When no weights are found or they cannot be loaded, ``fallback=True``
        logs a warning once (logger ``degradations``) and returns the heuristic;
        ``fallback=False`` raises ``FileNotFoundError`` / ``OSError`` naming the path.
        """
        if path is None:
            path = os.environ.get(DEFAULT_DEPTH_MODEL_ENV) or _cached_hf_snapshot()
        if path is None:
            if not fallback:
                raise FileNotFoundError(
                    f"Depth Anything V2 weights not found: {DEFAULT_DEPTH_MODEL_ENV} is unset and "
                    f"{HF_REPO_ID} is not in the local Hugging Face cache"
                )
            _log_once(logging.WARNING, WEIGHTS_NOT_FOUND_MESSAGE)
            return cls()
        try:
            return cls._from_folder(Path(path))
        except OSError as error:
            if not fallback:
                raise
            _log_once(logging.WARNING, f"{error}; using the heuristic depth")
            return cls()

    @classmethod
    def _from_folder(cls, folder: Path) -> DepthEstimator:
        if not folder.is_dir():
            raise FileNotFoundError(f"Depth Anything V2 weights not found: {folder} is not a folder")
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True)
            processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except Exception as error:  # transformers raises OSError, ValueError, KeyError... for broken folders
            raise OSError(f"could not load Depth Anything V2 from {folder}: {error}") from error
        if model.config.model_type != "depth_anything":
            raise OSError(f"{folder} holds a {model.config.model_type!r} model, not Depth Anything")
        return cls(model, processor, source=f"{DEPTH_ANYTHING_SOURCE_PREFIX}:{folder.absolute()}")

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, 1, H, W)`` depth in ``[0, 1]``, 0 near, 1 far."""
        _check_image(rgb)
        if self.model is None:
            return heuristic_depth(rgb)
        height, width = rgb.shape[-2:]
        image = rgb.float().clamp(0.0, 1.0).expand(-1, 3, -1, -1)
        inputs = self.processor(images=list(image.cpu()), do_rescale=False, return_tensors="pt")
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            prediction = self.model(pixel_values=inputs["pixel_values"].to(device)).predicted_depth
        prediction = F.interpolate(prediction[:, None].float(), size=(height, width), mode="bilinear")
        depth = _normalise_per_image(prediction)
        if self.model.config.depth_estimation_type == "relative":
            depth = 1.0 - depth
        return depth.to(device=rgb.device, dtype=rgb.dtype)


class DepthCache:
    """Disk cache of depth maps, one ``.npy`` float16 file per (image content, estimator source, size).

    The content key is the SHA-256 of the image tensor's bytes, or ``key`` when the caller has a
    cheaper stable one (e.g. ``hashlib.file_digest`` of the image file). Files are written atomically
    (``io.write_bytes_atomic``), so concurrent workers never read a partial file. Maps are returned as stored (float16-rounded) so a hit and
    a miss give identical values.
    """

    def __init__(self, folder: str | os.PathLike, estimator: DepthEstimator):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.estimator = estimator

    def _path_for(self, rgb: torch.Tensor, key: str | None = None) -> Path:
        """File that holds (or will hold) the depth map of ``rgb``."""
        if key is None:
            content = hashlib.sha256(str((rgb.dtype, tuple(rgb.shape))).encode())
            content.update(rgb.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
            key = content.hexdigest()
        height, width = rgb.shape[-2:]
        name = hashlib.sha256(f"{key}|{self.estimator.source}|{height}x{width}".encode()).hexdigest()
        return self.folder / f"{name}.npy"

    def __call__(self, rgb: torch.Tensor, key: str | None = None) -> torch.Tensor:
        """``(1, C, H, W)`` in ``[0, 1]`` -> ``(1, 1, H, W)`` float32 depth, computed at most once per key."""
        _check_image(rgb)
        if rgb.shape[0] != 1:
            raise ValueError(f"DepthCache takes one image at a time, got a batch of {rgb.shape[0]}")
        path = self._path_for(rgb, key)
        try:
            stored = np.load(path)
        except FileNotFoundError:
            stored = self.estimator(rgb)[0, 0].detach().cpu().numpy().astype(np.float16)
            self._write_atomically(path, stored)
        return torch.from_numpy(stored.astype(np.float32))[None, None].to(rgb.device)

    def _write_atomically(self, path: Path, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, array)
        write_bytes_atomic(path, buffer.getvalue())
