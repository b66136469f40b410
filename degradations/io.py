"""Reading IR/VIS images into tensors and writing results atomically.

IR is always one channel: an RGB-encoded thermal image (LLVIP, M3FD and TNO ship gray-in-RGB files) is
reduced to luminance. VIS keeps its colour, except that a gray image (mode L, or RGB with three equal
channels) stays one channel so that per-channel noise never paints colour into a gray picture.
Integer images are scaled by their container range (8-bit by 255, 16-bit by 65535); a thermal camera
that stores 12- or 14-bit counts in 16-bit files is read correctly with ``ir_bits=12`` / ``14``.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_UMASK = os.umask(0)
os.umask(_UMASK)
# The mode a file created the usual way (open()) gets; files written through mkstemp or safetensors (0600)
# are given it, so that the other users of a shared folder can read them.
USUAL_FILE_MODE = 0o666 & ~_UMASK


class ImageReadError(ValueError):
    """An input image could not be read; the message names the file."""


class OutputWriteError(OSError):
    """An output file could not be written; the message names the file the caller asked for, not the
    temporary file the write went through."""


def _read_failure(path: Path, exc: Exception) -> str:
    """Why ``path`` could not be read, in the user's terms rather than imageio's."""
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty"
    if "Could not find a backend" in str(exc):  # imageio's answer to a file no plugin recognises
        return "not an image in a format this tool reads (PNG, JPEG, BMP, TIFF)"
    return f"{type(exc).__name__}: {exc}"


def _read_array(path: Path) -> np.ndarray:
    try:
        arr = iio.imread(path)
    except Exception as exc:  # imageio raises many types for broken files
        raise ImageReadError(f"{path}: cannot read image ({_read_failure(path, exc)})") from exc
    if arr.ndim == 3 and arr.shape[-1] in (2, 4):  # drop alpha
        arr = arr[..., :-1]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3)):
        raise ImageReadError(f"{path}: unsupported image layout {arr.shape}")
    if arr.size == 0:
        raise ImageReadError(f"{path}: empty image")
    return arr


def unit_range(arr: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Pixels as float32 in [0, 1]: 8-bit by 255, 16-bit by 65535 (or 2**bits - 1), floats clipped.

    int32 is taken as 16-bit too: that is how PIL hands out 16-bit PNGs (mode I).
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if bits is not None and not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16 (the bits a 16-bit file holds), got {bits}")
    if arr.dtype in (np.uint16, np.int32):
        scale = float(2 ** bits - 1) if bits else 65535.0
        return np.clip(arr.astype(np.float32) / scale, 0.0, 1.0)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    raise TypeError(f"unsupported pixel type {arr.dtype}")


def _to_unit(arr: np.ndarray, path: Path, bits: int | None = None) -> np.ndarray:
    try:
        return unit_range(arr, bits)
    except TypeError as exc:
        raise ImageReadError(f"{path}: {exc}") from None


def _luma(arr: np.ndarray) -> np.ndarray:
    """Rec. 601 luminance of (H, W, 3) in [0, 1]."""
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def read_ir(path: str | os.PathLike, bits: int | None = None) -> torch.Tensor:
    """Read a thermal image as a (1, 1, H, W) float32 tensor in [0, 1], whatever its file mode."""
    path = Path(path)
    arr = _to_unit(_read_array(path), path, bits)
    if arr.ndim == 3:
        arr = arr[..., 0] if arr.shape[-1] == 1 else _luma(arr)
    return torch.from_numpy(np.ascontiguousarray(arr))[None, None]


def read_vis(path: str | os.PathLike) -> torch.Tensor:
    """Read a visible image as (1, 3, H, W), or (1, 1, H, W) when the image is gray, float32 in [0, 1]."""
    path = Path(path)
    arr = _to_unit(_read_array(path), path)
    if arr.ndim == 3 and arr.shape[-1] == 3 and not (
        np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
    ):
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    gray = arr if arr.ndim == 2 else arr[..., 0]
    return torch.from_numpy(np.ascontiguousarray(gray))[None, None]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageReadError(f"{path}: cannot read image header ({exc})") from exc


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8, rounding to nearest."""
    if x.dim() == 4:
        x = x[0]
    arr = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def encode_png(x: torch.Tensor | np.ndarray) -> bytes:
    """8-bit PNG bytes. zlib level 1: 3x faster than the default for ~10% larger files, which matters
    when a benchmark writes thousands of noisy (hardly compressible) images."""
    from PIL import Image

    arr = to_uint8(x) if isinstance(x, torch.Tensor) else x
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """The JSON object in ``path`` (a settings record, a config); ValueError naming the file and ``what`` it
    should hold when it cannot be read, is not JSON, or is not an object."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read {what} ({exc})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: {what} must be a JSON object, got {type(values).__name__}")
    return values


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename,
    so a killed process leaves either no file or the complete one, never half a file. (No fsync: that
    guards against power loss, not a kill, and costs milliseconds per image.)"""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputWriteError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    try:
        os.fchmod(fd, USUAL_FILE_MODE)  # mkstemp creates 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputWriteError(f"{path}: cannot write ({exc.strerror or exc})") from exc
        raise


def write_png(path: str | os.PathLike, x: torch.Tensor | np.ndarray) -> bytes:
    """Encode ``x`` as 8-bit PNG and write it atomically; returns the bytes written."""
    data = encode_png(x)
    write_bytes_atomic(path, data)
    return data
