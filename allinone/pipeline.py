"""FusionPipeline: fuse one IR/VIS pair with a trained FusionCNN in one call.

Like a diffusers pipeline, it composes the model and does the chores around it: reading inputs of
any kind (file paths, PIL images, numpy arrays, tensors), turning a prompt and/or degradation levels
into a :class:`~allinone.conditioning.Condition`, choosing whole-frame or tiled inference, and
converting the result::

    pipe = FusionPipeline.from_pretrained()            # the shipped checkpoint, on the CPU
    fused = pipe("ir.png", "vi.png", degradation="haze:3", prompt="thick fog at dusk")
    fused.save("fused.png")
    pipe("ir.png", "vi.png")                          # told nothing: the blind estimator reads the pair ("auto")
    pipe("ir.png", "vi.png", degradation="none")      # unconditioned: the model's null embedding

Frames up to ``WHOLE_FRAME_MAX_PIXELS`` go through the network whole; larger ones in overlapping
``DEFAULT_TILE`` tiles (:func:`allinone.tiling.tiled_apply`), so memory stays bounded whatever the
frame size. The network has no global operation, so tiled and whole-frame outputs agree.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Union

import numpy as np
import torch
from PIL import Image

from allinone.conditioning import Condition, SentenceEncoder
from allinone.models.degradation_estimator import DegradationEstimator
from allinone.models.fusion_cnn import RGB_TO_LUMA, FusionCNN
from allinone.models.serialization import CONFIG_NAME, WEIGHTS_NAME
from allinone.tiling import tiled_apply
from degradations.io import read_ir, read_vis, to_uint8, unit_range
from degradations.labels import label_vector, parse_degradation_spec
from degradations.pairs import align_pair

# The shipped weights: <repo>/checkpoints/fusion_cnn, next to the package (an editable install keeps them there).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "fusion_cnn"
DEFAULT_ESTIMATOR = DEFAULT_CHECKPOINT.parent / "degradation_estimator"
AUTO = "auto"  # the degradation "value" that asks the blind estimator for the levels
UNCONDITIONED = "none"  # the degradation "value" that fuses with the null embedding (the condition-dropout path)
WHOLE_FRAME_MAX_PIXELS = 1024 * 1024
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32
ALIGN_MODES = ("error", "resize")

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
Degradation = Union[Mapping[str, int], str]

# PIL modes whose pixels np.asarray returns as they are; any other mode is converted to RGB first.
_PLAIN_MODES = ("L", "RGB", "I;16", "I;16L", "I;16B", "I", "F")
# How far float pixels may stray outside [0, 1] (rounding in the caller's arithmetic) before they are refused.
FLOAT_TOLERANCE = 1e-3


def _unit_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """Pixels of the in-memory image ``name`` as float32 in [0, 1], by dtype: uint8 / 255, uint16 / 65535, bool,
    float as it is. Floats outside [0, 1] (beyond ``FLOAT_TOLERANCE``), NaN and inf raise ValueError; other
    integer types raise TypeError, since an int32 or int64 array (``np.array(img).astype(int)``) does not say
    whether it holds 8- or 16-bit values."""
    if array.dtype.byteorder == ">":  # PIL's I;16B
        array = array.astype(array.dtype.newbyteorder("="))
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{name}: pixels must be finite numbers, found NaN or inf")
        if low < -FLOAT_TOLERANCE or high > 1.0 + FLOAT_TOLERANCE:
            raise ValueError(f"{name}: float values must lie in [0, 1], got {round(low, 4)}..{round(high, 4)}; "
                             "scale them into [0, 1] (divide 8-bit data by 255)")
    elif array.dtype not in (np.uint8, np.uint16, np.bool_):
        raise TypeError(f"{name}: unsupported pixel type {array.dtype}: pass uint8 (8-bit), uint16 (16-bit) "
                        "or float in [0, 1]")
    return unit_range(array)


def _array_to_tensor(array: np.ndarray, name: str) -> torch.Tensor:
    """(H, W) or (H, W, C) array -> (1, C, H, W) float32 in [0, 1], alpha dropped; see :func:`_unit_pixels`."""
    if array.size == 0:
        raise ValueError(f"{name}: empty image, shape {array.shape}")
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        array = array[..., :-1]
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"{name}: expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(_unit_pixels(array, name).transpose(2, 0, 1)))[None]


def _tensor_to_array(image: torch.Tensor, name: str) -> np.ndarray:
    """(H, W), (C, H, W) or (1, C, H, W) tensor -> (H, W) or (H, W, C) array of the same dtype on the CPU, so
    that tensors and arrays share one conversion (the same dtype scales the same way)."""
    image = image.detach().cpu()
    if image.dim() == 4 and image.shape[0] != 1:
        raise ValueError(f"{name}: expected one image, got a batch of {image.shape[0]}; use fuse_tensors for batches")
    if image.dim() == 4:
        image = image[0]
    if image.dim() == 3 and image.shape[0] not in (1, 2, 3, 4):  # C-first, as torch lays out images
        raise ValueError(f"{name}: expected an (H, W), (C, H, W) or (1, C, H, W) tensor with C in (1, 3), got "
                         f"{tuple(image.shape)}; for a channels-last (H, W, C) tensor pass .permute(2, 0, 1)")
    if image.dim() not in (2, 3):
        raise ValueError(f"{name}: expected an (H, W), (C, H, W) or (1, C, H, W) tensor, got {tuple(image.shape)}")
    if image.is_floating_point():
        image = image.float()  # numpy has no bfloat16
    return (image.permute(1, 2, 0) if image.dim() == 3 else image).numpy()


def _pil_to_array(image: Image.Image, name: str) -> np.ndarray:
    """A PIL image's pixels as (H, W) or (H, W, C); mode I (int32) as the 16-bit values it holds."""
    array = np.asarray(image if image.mode in _PLAIN_MODES else image.convert("RGB"))
    if image.mode == "I":  # int32: how PIL hands out 16-bit PNGs
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"{name}: mode I pixels must lie in 0..65535 (16-bit), got {array.min()}..{array.max()}")
        array = array.astype(np.uint16)
    return array


def image_to_tensor(image: ImageInput, modality: str) -> torch.Tensor:
    """Any supported image input as a (1, C, H, W) float32 tensor in [0, 1].

    ``modality`` "ir": always one channel (the Rec. 601 luminance of a colour input, as
    :func:`degradations.io.read_ir`). "vi": three channels, or one when the image is gray (three
    equal channels), as :func:`degradations.io.read_vis`. Errors name the modality.

    Arrays are (H, W) or (H, W, C), tensors (H, W), (C, H, W) or (1, C, H, W) (a channels-last tensor is
    refused: its layout cannot be told from a C-first one in general); C is 1 or 3, plus an alpha channel
    that is dropped. Arrays and tensors are scaled alike, by dtype: uint8 by 255, uint16 by 65535, floats
    must lie in [0, 1] (ValueError otherwise, and for NaN or inf), other types (int32, int64) raise TypeError
    as their bit depth is unknown. A PIL image in mode I is taken as 16-bit, as in :mod:`degradations.io`.
    """
    if modality not in ("ir", "vi"):
        raise ValueError(f"modality must be 'ir' or 'vi', got {modality!r}")
    if isinstance(image, (str, os.PathLike)):
        return read_ir(image) if modality == "ir" else read_vis(image)
    if isinstance(image, Image.Image):
        array = _pil_to_array(image, modality)
    elif isinstance(image, np.ndarray):
        array = image
    elif isinstance(image, torch.Tensor):
        array = _tensor_to_array(image, modality)
    else:
        raise TypeError(f"{modality}: unsupported image input {type(image).__name__}: expected a path, PIL image, "
                        "array or tensor")
    tensor = _array_to_tensor(array, modality)
    if tensor.shape[1] == 3:
        if modality == "ir":
            luma = torch.tensor(RGB_TO_LUMA, dtype=tensor.dtype).view(1, 3, 1, 1)
            return (tensor * luma).sum(dim=1, keepdim=True)
        if torch.equal(tensor[:, 0], tensor[:, 1]) and torch.equal(tensor[:, 0], tensor[:, 2]):
            return tensor[:, :1]
    return tensor


def make_condition(prompt: str | None = None, degradation: Degradation | None = None) -> Condition | None:
    """The condition of one pair (batch size 1), or None (unconditioned) when neither source is given.

    ``degradation`` is ``{"haze": 3, "lowlight": 2}`` or its CLI form ``"haze:3,lowlight:2"``; an empty
    one means "known to be clean" (a zero label vector), which differs from None ("unknown"). A prompt that is
    not a string, or empty, and a degradation of another type raise (see :func:`_check_condition`).
    """
    _check_condition(prompt, degradation)
    if isinstance(degradation, str):
        degradation = parse_degradation_spec(degradation)
    labels = label_vector(degradation)[None] if degradation is not None else None
    prompts = [prompt] if prompt else None
    if labels is None and prompts is None:
        return None
    return Condition(labels=labels, prompts=prompts)


def _check_condition(prompt: str | None, degradation: Degradation | None) -> None:
    """TypeError or ValueError naming ``prompt`` or ``degradation`` when the pipeline cannot use it; an empty
    prompt would otherwise fuse unconditioned without a word."""
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string or None, got {type(prompt).__name__}")
    if prompt is not None and not prompt.strip():
        raise ValueError("prompt is empty; describe the degradations, or pass prompt=None")
    if degradation is not None and not isinstance(degradation, (str, Mapping)):
        raise TypeError(f"degradation must be a string (\"haze:3\", \"{AUTO}\", \"{UNCONDITIONED}\"), a mapping "
                        f"({{\"haze\": 3}}) or None, got {type(degradation).__name__}")


def resolve_tile(height: int, width: int, tile: int | None) -> int | None:
    """Tile size to use for an H x W frame; None = whole frame.

    ``tile=None``: whole frame up to ``WHOLE_FRAME_MAX_PIXELS`` pixels, else ``DEFAULT_TILE`` tiles.
    ``tile=0``: whole frame whatever its size. Any other value: tiles of that size.
    """
    if tile is None:
        return None if height * width <= WHOLE_FRAME_MAX_PIXELS else DEFAULT_TILE
    if tile < 0:
        raise ValueError(f"tile must be >= 0, got {tile}")
    return tile or None


def _describe(image: ImageInput) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"({type(image).__name__})"


def _check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; ValueError naming it when torch does not know it or no CUDA device is there
    (loading the weights would report that as weights that do not fit the config)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r}: no CUDA device is available (use device='cpu')")
    return device


class FusionPipeline:
    """Degradation-aware IR/VIS fusion with a :class:`FusionCNN` (see the module docstring).

    Args:
        model: the fusion network; it is put in eval mode and used on its own device.
        checkpoint: the folder it was loaded from, for reports (None for an in-memory model).
        estimator: the blind degradation estimator behind ``degradation="auto"``; None loads the one saved in
            ``estimator_path`` when first needed.
    """

    def __init__(self, model: FusionCNN, checkpoint: str | os.PathLike | None = None,
                 estimator: DegradationEstimator | None = None,
                 estimator_path: str | os.PathLike = DEFAULT_ESTIMATOR) -> None:
        self.model = model.eval()
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._estimator = estimator
        self.estimator_path = Path(estimator_path)

    @property
    def estimator(self) -> DegradationEstimator:
        if self._estimator is None:
            if not (self.estimator_path / CONFIG_NAME).is_file():
                raise FileNotFoundError(f"degradation=\"auto\" needs the degradation estimator, not found in "
                                        f"{self.estimator_path} (train one with scripts/train_estimator.py)")
            self._estimator = DegradationEstimator.from_pretrained(self.estimator_path, device=self.device)
            self._estimator.crop_executor = self.model.prior_executor
        return self._estimator

    @property
    def has_estimator(self) -> bool:
        """Whether ``degradation="auto"`` can run: an estimator was given or one is saved in ``estimator_path``."""
        return self._estimator is not None or (self.estimator_path / CONFIG_NAME).is_file()

    @torch.inference_mode()
    def estimate_degradation(self, ir: torch.Tensor, vi: torch.Tensor) -> dict[str, int]:
        """Levels of the degradations the blind estimator sees in one pair: ``ir`` (1, 1, H, W) and ``vi``
        (1, 3 or 1, H, W) in [0, 1]; ``{}`` when it sees none."""
        return self.estimator.estimate_levels(ir.to(self.device, torch.float32), vi.to(self.device, torch.float32))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = DEFAULT_CHECKPOINT,
        device: str | torch.device = "cpu",
        text_encoder: SentenceEncoder | None = None,
        estimator_path: str | os.PathLike = DEFAULT_ESTIMATOR,
    ) -> "FusionPipeline":
        """Load the FusionCNN saved in ``path`` (``config.json`` + ``model.safetensors``; None: the shipped
        checkpoint, as ``allinone fuse`` without ``--checkpoint``) onto ``device``.

        Raises FileNotFoundError when ``path`` holds no checkpoint, ValueError naming the file, or the device, for
        unreadable weights, weights that do not fit the config, an unknown device or a CUDA device this machine
        lacks. ``text_encoder`` replaces the lazily loaded MiniLM used for prompts (tests pass a fake);
        ``estimator_path`` is where ``degradation="auto"`` finds the blind estimator.
        """
        path = Path(path) if path is not None else DEFAULT_CHECKPOINT
        device = _check_device(device)
        if not (path / CONFIG_NAME).is_file() or not (path / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"no FusionCNN checkpoint in {path}: expected {CONFIG_NAME} and {WEIGHTS_NAME} "
                "(written by FusionCNN.save_pretrained)")
        return cls(FusionCNN.from_pretrained(path, device=device, text_encoder=text_encoder), checkpoint=path,
                   estimator_path=estimator_path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def use_threads(self, threads: int) -> int:
        """Run on ``threads`` CPU threads; returns the torch threads each stream of work gets.

        From 2 threads on a CPU, a second thread takes work that depends on the input alone while this one
        runs the network: the model's input priors (its denoising and dehazing images), and half the crops the
        blind estimator reads. ``torch.set_num_threads`` is process-wide, so each of the two streams gets
        ``threads // 2``. On the 2-core machine of docs/BENCHMARKS.md this is far faster than letting every
        operation use 2 threads (speed section). Output is the same either way. 1 thread, a model without
        priors, or a GPU: one stream.
        """
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        concurrent = threads >= 2 and self.device.type == "cpu" and self.model.has_input_priors
        worker = self.model.prior_executor
        if concurrent and worker is None:
            worker = ThreadPoolExecutor(1, thread_name_prefix="allinone-worker")
        elif not concurrent and worker is not None:
            worker.shutdown()
            worker = None
        self.model.prior_executor = worker
        if self._estimator is not None:
            self._estimator.crop_executor = worker
        per_stream = threads // 2 if concurrent else threads
        torch.set_num_threads(per_stream)
        return per_stream

    @torch.inference_mode()
    def embed(self, condition: Condition | None, batch_size: int = 1) -> torch.Tensor:
        """Degradation embedding (B, E) of ``condition``; compute it once to fuse many frames with it."""
        return self.model.embed(condition, batch_size)

    @torch.inference_mode()
    def fuse_tensors(
        self,
        ir: torch.Tensor,
        vi: torch.Tensor,
        condition: Condition | torch.Tensor | None = None,
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
    ) -> torch.Tensor:
        """Fuse a batch: ``ir`` (B, 1, H, W) and ``vi`` (B, 3 or 1, H, W) in [0, 1] -> RGB (B, 3, H, W).

        Args:
            ir, vi: same-sized batches, on any device (moved to the pipeline's).
            condition: a Condition of batch size B or 1, an embedding (B or 1, E) from :meth:`embed`,
                or None (unconditioned). Batch size 1 applies to every sample.
            tile: see :func:`resolve_tile`.
            overlap: overlap of neighbouring tiles, in pixels.

        Returns:
            The fused batch, float in [0, 1], on the pipeline's device.
        """
        ir, vi = self._on_device(ir, vi)
        batch = ir.shape[0]
        embedding = condition if isinstance(condition, torch.Tensor) else self.model.embed(condition, 1)
        embedding = embedding.to(self.device).expand(batch, -1)

        def fuse(ir_part: torch.Tensor, vi_part: torch.Tensor) -> torch.Tensor:
            return self.model(ir_part, vi_part, embedding)

        tile = resolve_tile(*ir.shape[-2:], tile)
        if tile is None:
            return fuse(ir, vi)
        return tiled_apply(fuse, ir, vi, tile=tile, overlap=overlap)

    @torch.inference_mode()
    def fuse_blind(
        self, ir: torch.Tensor, vi: torch.Tensor, prompt: str | None = None, tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
    ) -> tuple[torch.Tensor, dict[str, int]]:
        """Fuse one pair (batch size 1) told what the blind estimator sees in it; returns (fused RGB, levels): the
        output of ``fuse_tensors(ir, vi, make_condition(prompt, levels))``."""
        ir, vi = self._on_device(ir, vi)
        if ir.shape[0] != 1:
            raise ValueError(f"fuse_blind fuses one pair, got a batch of {ir.shape[0]}")
        levels = self.estimate_degradation(ir, vi)
        return self.fuse_tensors(ir, vi, make_condition(prompt, levels), tile, overlap), levels

    def _on_device(self, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ir`` (B, 1, H, W) and ``vi`` (B, 3 or 1, H, W) as float32 on the pipeline's device; checks shapes."""
        if ir.dim() != 4 or vi.dim() != 4 or ir.shape[1] != 1 or vi.shape[1] not in (1, 3):
            raise ValueError(f"expected ir (B, 1, H, W) and vi (B, 3 or 1, H, W), got {tuple(ir.shape)} "
                             f"and {tuple(vi.shape)}")
        if ir.shape[0] != vi.shape[0] or ir.shape[-2:] != vi.shape[-2:]:
            raise ValueError(f"ir {tuple(ir.shape)} and vi {tuple(vi.shape)} differ in batch size or frame size")
        return ir.to(self.device, torch.float32), vi.to(self.device, torch.float32)

    def __call__(
        self,
        ir: ImageInput,
        vi: ImageInput,
        prompt: str | None = None,
        degradation: Degradation | None = None,
        tile: int | None = None,
        overlap: int = DEFAULT_OVERLAP,
        align: str = "error",
    ) -> Image.Image:
        """Fuse one pair into an RGB PIL image of the VIS size (gray when VIS is gray).

        Args:
            ir, vi: file paths, PIL images, numpy arrays ((H, W) or (H, W, 3)) or tensors ((H, W), (C, H, W) or
                (1, C, H, W)): uint8, uint16 or float in [0, 1]; see :func:`image_to_tensor`.
            prompt: free-text description of the degradations, e.g. "dense fog, dark night"; not empty.
            degradation: degradation levels 1..5, ``{"haze": 3}`` or ``"haze:3"``; ``{}`` or ``""`` for a pair known
                to be clean; ``"auto"``: the levels :meth:`estimate_degradation` sees; ``"none"``: unconditioned.
                With neither prompt nor degradation it is ``"auto"``, as in ``allinone fuse`` (told what the
                estimator sees, the model beats the unconditioned one on most degradations, docs/BENCHMARKS.md),
                or unconditioned with a warning when there is no estimator.
            tile, overlap: see :meth:`fuse_tensors`.
            align: IR/VIS size mismatch: "error" (ValueError) or "resize" (IR resized to the VIS size).
        """
        if align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
        _check_condition(prompt, degradation)
        ir_tensor, vi_tensor = image_to_tensor(ir, "ir"), image_to_tensor(vi, "vi")
        ir_tensor = align_pair(ir_tensor, vi_tensor, align, _describe(ir), _describe(vi), 'align="resize"')
        if prompt is None and degradation is None:
            degradation = AUTO if self.has_estimator else UNCONDITIONED
            if degradation == UNCONDITIONED:
                warnings.warn(f"no blind degradation estimator in {self.estimator_path}: fusing unconditioned "
                              "(prompt= or degradation= tell the model what is wrong)", stacklevel=2)
        if degradation == AUTO:
            fused, _ = self.fuse_blind(ir_tensor, vi_tensor, prompt, tile, overlap)
        else:
            condition = make_condition(prompt, None if degradation == UNCONDITIONED else degradation)
            fused = self.fuse_tensors(ir_tensor, vi_tensor, condition, tile, overlap)
        return Image.fromarray(to_uint8(fused.cpu()))
