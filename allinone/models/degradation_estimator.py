"""A blind degradation estimator: (IR, VIS) -> label vector, the third source of a Condition.

The fusion network is conditioned on a label vector (entry = level / 5 per degradation,
:func:`degradations.labels.label_vector`). A user rarely knows the levels; this small CNN predicts them from
the degraded pair, so ``degradation="auto"`` fills ``Condition.labels`` with its estimate. It is trained on
the same synthesizer triplets as the fusion model (``scripts/train_estimator.py``): for each degradation a
classification over the levels 0 (absent) to 5, by cross-entropy. (A first version regressed the label
vector by binary cross-entropy; its outputs drifted to the mean and under-called every level.)

Noise, JPEG blocking, stripes, rain and blur live in single pixels: besides the images, the network gets
the magnitude of their high-pass residual (image minus its 3x3 mean, scaled by ``HIGH_PASS_GAIN``), whose
mean over a frame grows with noise and falls with blur; learned from the raw images alone, these local
cues stayed at chance (a first version detected haze and low light, and no noise, blur or JPEG at all).
Haze, low light and low contrast are global, so the head pools over the whole input (mean and standard
deviation of the last features). Training sees ``crop`` x ``crop`` crops at the native resolution, so
:meth:`DegradationEstimator.estimate` judges a frame by up to six such crops spread over it (their level
probabilities averaged): the statistics it pools are those it was trained on, and the cost is bounded whatever the
frame size.
"""
from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from allinone.models.serialization import config_from_dict, load_weights, read_config, save_model
from allinone.models.worker import submit_in_callers_mode
from degradations.labels import DEGRADATION_TYPES, MAX_LEVEL, levels_from_vector

MODEL_TYPE = "allinone-degradation-estimator"
FORMAT_VERSION = 1
# The high-pass residual of a clean image is a few grey levels (~0.01); x10 brings it near the images' range.
HIGH_PASS_GAIN = 10.0
# Degradations that grow with distance: judged on the farthest (top) row of crops alone. Fog can leave the
# road in front of the camera clear while the far field is a white-out; averaged with the clear lower crops,
# dense real fog read as haze:1 or 2. scripts/eval_estimator.py compares the three ways of pooling the crops
# (all, top row, most veiled crop) on synthetic haze; the top row gives a lower level error than all crops
# at about the same false alarms, the most veiled crop a lower error still but more false alarms.
FAR_FIELD_DEGRADATIONS = ("haze",)


def high_pass_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|x - mean3x3(x)|`` per channel (B, C, H, W), edges replicated."""
    return (x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)).abs()


@dataclass(frozen=True)
class EstimatorConfig:
    """``widths[i]``: channels after the i-th stride-2 stage; ``hidden``: width of the head's MLP; ``crop``:
    the side of the training crops, and of the crops ``estimate`` reads."""

    widths: tuple[int, ...] = (12, 24, 48, 64)
    hidden: int = 64
    crop: int = 160
    degradation_types: tuple[str, ...] = DEGRADATION_TYPES

    @classmethod
    def from_dict(cls, values: dict) -> "EstimatorConfig":
        return config_from_dict(cls, values)


def _stage(in_channels: int, out_channels: int, refine: bool) -> nn.Sequential:
    """A stride-2 3x3 convolution, then (with ``refine``) a 3x3 convolution, each followed by GELU."""
    layers = [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.GELU()]
    if refine:
        layers += [nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GELU()]
    return nn.Sequential(*layers)


def expected_level(probs: torch.Tensor) -> torch.Tensor:
    """The expected level (...) under level probabilities (..., MAX_LEVEL + 1)."""
    return (probs * torch.arange(MAX_LEVEL + 1, dtype=probs.dtype, device=probs.device)).sum(dim=-1)


def crop_corners(height: int, width: int, crop: int, rows: int = 2, cols: int = 3) -> list[tuple[int, int]]:
    """Top-left corners of up to ``rows`` x ``cols`` ``crop``-sized crops spread evenly over a frame (fewer
    when the frame is small; one corner (0, 0) when it is smaller than a crop, which is then read whole)."""
    def starts(size: int, count: int) -> list[int]:
        count = max(1, min(count, size // crop))
        return sorted({round(i * (size - crop) / max(1, count - 1)) for i in range(count)}) if size > crop else [0]
    return [(top, left) for top in starts(height, rows) for left in starts(width, cols)]


class DegradationEstimator(nn.Module):
    """Predicts the label vector of a degraded pair.

    Input: IR (B, 1, H, W) and VIS (B, 3 or 1, H, W) (a gray VIS is read as 3 equal channels), in [0, 1].
    Output of ``forward``: level logits (B, L, MAX_LEVEL + 1); :meth:`estimate` gives the label vector of the
    expected levels.
    """

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or EstimatorConfig()
        widths = self.config.widths
        # The first stage runs at half resolution over the whole input: one convolution only, for cost.
        # Inputs: IR, VIS RGB, and the high-pass magnitudes of IR and of the VIS luma (6 channels).
        self.stages = nn.Sequential(*(_stage(a, b, refine=i > 0)
                                      for i, (a, b) in enumerate(zip((6, *widths[:-1]), widths))))
        self.head = nn.Sequential(nn.Linear(2 * widths[-1], self.config.hidden), nn.GELU(),
                                  nn.Linear(self.config.hidden, len(self.config.degradation_types) * (MAX_LEVEL + 1)))
        for layer in self.stages.modules():  # He init: the GELUs start in their non-linear range
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        # Where the second half of the crops is read while the calling thread reads the first half (see
        # crop_probabilities); None: all in the calling thread.
        self.crop_executor: Executor | None = None

    def forward(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        vi = vi.expand(-1, 3, -1, -1) if vi.shape[1] == 1 else vi
        details = HIGH_PASS_GAIN * high_pass_magnitude(torch.cat([ir, vi.mean(dim=1, keepdim=True)], dim=1))
        features = self.stages(torch.cat([ir, vi, details], dim=1))
        pooled = torch.cat([features.mean(dim=(2, 3)), features.std(dim=(2, 3))], dim=1)
        return self.head(pooled).unflatten(1, (len(self.config.degradation_types), MAX_LEVEL + 1))

    @torch.no_grad()
    def crop_probabilities(self, ir: torch.Tensor, vi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Level probabilities of each crop of ``crop_corners`` (crops, B, L, MAX_LEVEL + 1), and a (crops,)
        mask of the crops in the top row, where a level camera sees farthest. With ``crop_executor`` set, half
        the crops are read there (:mod:`allinone.models.worker`)."""
        crop = self.config.crop
        corners = crop_corners(*vi.shape[-2:], crop)

        def read(part: list[tuple[int, int]]) -> list[torch.Tensor]:
            return [self(ir[..., top:top + crop, left:left + crop], vi[..., top:top + crop, left:left + crop])
                    .softmax(dim=-1) for top, left in part]

        half = len(corners) // 2
        if self.crop_executor is None or half == 0:
            probabilities = read(corners)
        else:  # each crop is read alone either way, so the probabilities are the same
            second_half = submit_in_callers_mode(self.crop_executor, lambda: read(corners[half:]))
            probabilities = read(corners[:half]) + second_half.result()
        per_crop = torch.stack(probabilities)
        return per_crop, torch.tensor([top == corners[0][0] for top, _ in corners], device=per_crop.device)

    @torch.no_grad()
    def estimate(self, ir: torch.Tensor, vi: torch.Tensor) -> torch.Tensor:
        """Label vectors (B, L) in [0, 1] of whole frames: per degradation the expected level under the level
        probabilities averaged over the crops (for ``FAR_FIELD_DEGRADATIONS``, over the top row of crops),
        over MAX_LEVEL. (The most likely level would almost always be 0: each degradation is absent from most
        training samples, so a faint one rarely wins the argmax; the expectation lets the evidence for every
        level count.)"""
        return self.pool_crops(*self.crop_probabilities(ir, vi))

    def pool_crops(self, per_crop: torch.Tensor, top_row: torch.Tensor) -> torch.Tensor:
        """The label vectors (B, L) of :meth:`estimate` from the output of :meth:`crop_probabilities`."""
        far_field = torch.tensor([name in FAR_FIELD_DEGRADATIONS for name in self.config.degradation_types],
                                 device=per_crop.device)
        probs = torch.where(far_field[:, None], per_crop[top_row].mean(dim=0), per_crop.mean(dim=0))
        return expected_level(probs) / MAX_LEVEL

    def estimate_levels(self, ir: torch.Tensor, vi: torch.Tensor) -> dict[str, int]:
        """The levels it sees in one pair (batch size 1), as ``{"haze": 3}``; ``{}`` when it sees none."""
        return levels_from_vector(self.estimate(ir, vi)[0].cpu())

    def save_pretrained(self, folder: str | Path) -> None:
        save_model(self, folder, MODEL_TYPE, FORMAT_VERSION, asdict(self.config))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> "DegradationEstimator":
        model = cls(EstimatorConfig.from_dict(read_config(folder, MODEL_TYPE, FORMAT_VERSION)))
        load_weights(model, folder, device)
        return model.to(device).eval()
