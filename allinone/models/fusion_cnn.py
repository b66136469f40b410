"""FusionCNN: a small, degradation-conditioned network that restores and fuses IR and VIS into colour.

Inputs: degraded IR (B, 1, H, W) and degraded VIS (B, 3, H, W) (or (B, 1, H, W) gray), floats in
[0, 1]; output: fused RGB (B, 3, H, W) in [0, 1]. It works in YCbCr:

    Y_vis, C_vis   = YCbCr(VIS)                                  (C = (Cb, Cr))
    Y_enh          = LE^n(Y_vis),  LE(x) = x + alpha x (1 - x)   (Zero-DCE++ curve, as in LEFuse)
    Y              = w Y_enh + (1 - w) IR + detail
    C              = 0.5 + gain (avgpool2(C_vis) - 0.5) + offset      (chroma pulled toward / away from
                                                                        neutral, cast removed by offset)

where the per-pixel maps alpha, w, detail, gain and offset are predicted by a U-Net that runs at 1/2
resolution and below. Full-resolution work is pointwise only, apart from the stride-2 stem convolutions
that read the inputs: alpha, w, gain and offset are smooth and upsampled bilinearly, and the detail
residual comes back through pixel-shuffle (as in FFDNet). The body runs in channels-last layout, the
fast one for depthwise and 1x1 convolutions on CPU. This keeps a 640x480 pair under 100 ms on two CPU
threads.

VIS and IR features meet in a brightness-adaptive gate (after BA-Fusion): a per-pixel, per-channel gate
computed from both features and the local VIS illumination decides how much of each modality each
channel carries. Every residual block is modulated by FiLM from the degradation embedding (B, E) of
:class:`allinone.conditioning.DegradationEmbedder`; a zero embedding gives identity modulation. No
operation pools globally, so results do not depend on the frame size and tiled inference matches.

At initialisation the output is close to mean fusion of the IR and the VIS luma with the (2x2
averaged) VIS chroma, so training starts from a sane baseline.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from allinone.baselines import is_gray, merge_luma_chroma, neutralize_gray, vis_to_ycbcr
from allinone.conditioning import TEXT_EMBED_DIM, Condition, DegradationEmbedder, SentenceEncoder
from degradations.labels import DEGRADATION_TYPES

MODEL_TYPE = "allinone-fusion-cnn"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class FusionCNNConfig:
    """Architecture of a FusionCNN; saved as ``config.json`` next to the weights.

    ``widths[i]`` is the channel count at resolution 1 / 2**(i + 1); ``depths[i]`` the number of residual
    blocks of encoder stage i (each decoder stage has one).
    """

    widths: tuple[int, ...] = (16, 32, 64, 96)
    depths: tuple[int, ...] = (1, 1, 2, 2)
    expansion: int = 2
    embed_dim: int = 64
    embed_hidden_dim: int = 128
    curve_iterations: int = 4
    chroma_max_gain: float = 4.0
    degradation_types: tuple[str, ...] = DEGRADATION_TYPES
    text_dim: int = TEXT_EMBED_DIM

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.depths) or len(self.widths) < 2:
            raise ValueError("widths and depths need the same length, at least 2")

    @classmethod
    def from_dict(cls, values: dict) -> "FusionCNNConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown FusionCNNConfig fields: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


FUSION_CNN_CONFIGS: dict[str, FusionCNNConfig] = {
    "tiny": FusionCNNConfig(widths=(12, 24, 48, 96), depths=(1, 1, 2, 2), embed_dim=48, embed_hidden_dim=96),
    "small": FusionCNNConfig(widths=(16, 32, 64, 128), depths=(1, 2, 3, 3), embed_dim=64, embed_hidden_dim=128),
}

# Weights of the layers that produce the per-pixel maps start tiny, so the initial output is the
# mean-fusion baseline while gradients still reach every layer from the first step.
HEAD_INIT_STD = 1e-3


#################################################################################
#                                 Building blocks                               #
#################################################################################


class FiLM(nn.Module):
    """Feature-wise linear modulation: ``x * (1 + scale(e)) + shift(e)``.

    The projection has zero bias, so a zero embedding leaves ``x`` unchanged.
    """

    def __init__(self, embed_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, 2 * channels)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(embedding)[:, :, None, None].chunk(2, dim=1)
        return x * (1.0 + scale) + shift


class ResBlock(nn.Module):
    """Depthwise 3x3 conv -> FiLM -> pointwise expand -> ReLU -> pointwise project, plus the input."""

    def __init__(self, channels: int, expansion: int, embed_dim: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.film = FiLM(embed_dim, channels)
        self.expand = nn.Conv2d(channels, expansion * channels, 1)
        self.project = nn.Conv2d(expansion * channels, channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.film(self.spatial(x), embedding)
        return x + self.project(F.relu(self.expand(h)))


class Stage(nn.Module):
    """A run of residual blocks at one resolution."""

    def __init__(self, channels: int, depth: int, expansion: int, embed_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, expansion, embed_dim) for _ in range(depth))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, embedding)
        return x


class Upsample(nn.Module):
    """Channel projection at the low resolution, then bilinear x2 (the two commute; this is cheaper)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.proj(x), scale_factor=2.0, mode="bilinear", align_corners=False)


class BrightnessAdaptiveGate(nn.Module):
    """Mix VIS and IR features per pixel and channel, steered by the local VIS illumination.

    ``g = sigmoid(conv1x1([f_vis, f_ir, illumination]) + shift(e))``, ``f = g f_vis + (1 - g) f_ir``.
    In dark or glaring regions the gate can hand the channels to the IR features (BA-Fusion).
    """

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(2 * channels + 1, channels, 1)
        self.shift = nn.Linear(embed_dim, channels)

    def forward(
        self, vis: torch.Tensor, ir: torch.Tensor, illumination: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        logits = self.gate(torch.cat([vis, ir, illumination], dim=1)) + self.shift(embedding)[:, :, None, None]
        return torch.lerp(ir, vis, torch.sigmoid(logits))


def local_illumination(luma: torch.Tensor) -> torch.Tensor:
    """Smooth illumination (B, 1, H/2, W/2) of a luma image (B, 1, H, W): the mean over about 24x24 pixels.

    Averaged over 8x8 blocks, smoothed by a 3x3 box and brought back to half resolution; local only,
    so the gate behaves the same on tiles and on whole frames.
    """
    coarse = F.avg_pool2d(luma, 8)
    coarse = F.avg_pool2d(coarse, 3, stride=1, padding=1, count_include_pad=False)
    return F.interpolate(coarse, scale_factor=4.0, mode="bilinear", align_corners=False)


def apply_curve(luma: torch.Tensor, alpha: torch.Tensor, iterations: int) -> torch.Tensor:
    """Zero-DCE++ light-enhancement curve: ``x <- x + alpha x (1 - x)``, applied ``iterations`` times.

    ``alpha`` (B, 1, H, W) in [-1, 1]; each step maps [0, 1] onto itself monotonically, positive alpha
    brightens (most where the image is dark), negative alpha darkens.
    """
    for _ in range(iterations):
        luma = torch.addcmul(luma, alpha, luma * (1.0 - luma))
    return luma


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple`` (reflect; replicate when the image is too small)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


#################################################################################
#                                   FusionCNN                                   #
#################################################################################


class FusionCNN(nn.Module):
    """Degradation-conditioned joint restoration and fusion of IR and VIS into RGB (see module docstring).

    Args:
        config: a FusionCNNConfig, its dict form, or a name in FUSION_CNN_CONFIGS.
        text_encoder: sentence encoder for prompt conditions; default the lazily loaded MiniLM.
    """

    def __init__(self, config: FusionCNNConfig | dict | str = "tiny", text_encoder: SentenceEncoder | None = None):
        super().__init__()
        if isinstance(config, str):
            config = FUSION_CNN_CONFIGS[config]
        elif isinstance(config, dict):
            config = FusionCNNConfig.from_dict(config)
        self.config = config
        widths, embed_dim = config.widths, config.embed_dim
        self.embedder = DegradationEmbedder(
            embed_dim,
            num_labels=len(config.degradation_types),
            hidden_dim=config.embed_hidden_dim,
            text_dim=config.text_dim,
            text_encoder=text_encoder,
        )
        # Stride-2 stems read the full-resolution pixels (4x4 windows) straight into half resolution.
        self.ir_stem = nn.Conv2d(1, widths[0], 4, stride=2, padding=1)
        self.vis_stem = nn.Conv2d(3, widths[0], 4, stride=2, padding=1)
        self.gate = BrightnessAdaptiveGate(widths[0], embed_dim)
        self.encoder = nn.ModuleList(
            Stage(width, depth, config.expansion, embed_dim) for width, depth in zip(widths, config.depths)
        )
        self.downsamples = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(len(widths) - 1)
        )
        self.upsamples = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in range(len(widths) - 1))
        self.decoder = nn.ModuleList(
            Stage(widths[i], 1, config.expansion, embed_dim) for i in range(len(widths) - 1)
        )
        # Per-pixel maps at half resolution: curve alpha, fusion weight w, 4 detail sub-pixels
        # (pixel-shuffled to full resolution), 2 chroma log-gains, 2 chroma offsets.
        self.head = nn.Conv2d(widths[0], 1 + 1 + 4 + 2 + 2, 3, padding=1)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        for module in self.modules():
            if isinstance(module, ResBlock):
                # Residual branches start small so the stack begins close to the identity.
                nn.init.normal_(module.project.weight, std=0.02)
            if isinstance(module, (FiLM, BrightnessAdaptiveGate)):
                linear = module.proj if isinstance(module, FiLM) else module.shift
                nn.init.normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)  # zero embedding -> identity modulation / neutral gate shift
        nn.init.normal_(self.head.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)
        self.embedder.initialize_weights()

    @property
    def pad_multiple(self) -> int:
        return 2 ** len(self.config.widths)

    def embed(self, condition: Condition | None, batch_size: int) -> torch.Tensor:
        """Degradation embedding (B, E) of a condition (None = unconditioned)."""
        return self.embedder(condition, batch_size=batch_size)

    def forward(
        self, ir: torch.Tensor, vi: torch.Tensor, embedding: torch.Tensor | Condition | None = None
    ) -> torch.Tensor:
        """Fuse ``ir`` (B, 1, H, W) and ``vi`` (B, 3 or 1, H, W) into RGB (B, 3, H, W) in [0, 1].

        ``embedding`` is a (B, E) degradation embedding, a :class:`Condition` to embed, or None
        (unconditioned: the learned null embedding).
        """
        batch, _, height, width = ir.shape
        if not isinstance(embedding, torch.Tensor):
            embedding = self.embed(embedding, batch)
        gray = is_gray(vi)
        multiple = self.pad_multiple
        ir = pad_to_multiple(ir, multiple)
        vis_ycbcr = vis_to_ycbcr(pad_to_multiple(vi, multiple))
        vis_luma, vis_chroma = vis_ycbcr[:, :1], vis_ycbcr[:, 1:]

        vis = F.relu(self.vis_stem(vis_ycbcr)).contiguous(memory_format=torch.channels_last)
        thermal = F.relu(self.ir_stem(ir)).contiguous(memory_format=torch.channels_last)
        x = self.gate(vis, thermal, local_illumination(vis_luma), embedding)

        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x, embedding)
            skips.append(x)
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](self.upsamples[i](x) + skips[i], embedding)

        maps = self.head(x).contiguous()
        alpha, weight, detail, log_gain, offset = maps.split([1, 1, 4, 2, 2], dim=1)
        alpha, weight = _upsample2(torch.cat([torch.tanh(alpha), torch.sigmoid(weight)], dim=1)).split(1, dim=1)
        enhanced = apply_curve(vis_luma, alpha, self.config.curve_iterations)
        luma = torch.lerp(ir, enhanced, weight) + F.pixel_shuffle(detail, 2)

        gain = torch.exp(math.log(self.config.chroma_max_gain) * torch.tanh(log_gain))
        chroma = 0.5 + gain * (F.avg_pool2d(vis_chroma, 2) - 0.5) + 0.5 * torch.tanh(offset)
        chroma = _upsample2(chroma.clamp(0.0, 1.0))

        luma, chroma = luma[..., :height, :width], chroma[..., :height, :width]
        return merge_luma_chroma(luma, neutralize_gray(chroma, gray))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``model.safetensors`` (all weights, embedder included) and ``config.json`` to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, folder / WEIGHTS_NAME, metadata={"model_type": MODEL_TYPE, "format_version": str(FORMAT_VERSION)})
        document = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION, **asdict(self.config)}
        (folder / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str | torch.device = "cpu", text_encoder: SentenceEncoder | None = None
    ) -> "FusionCNN":
        """Rebuild a model written by :meth:`save_pretrained`, in eval mode. MiniLM comes from its package."""
        folder = Path(folder)
        document = json.loads((folder / CONFIG_NAME).read_text())
        model_type, version = document.pop("model_type", None), document.pop("format_version", None)
        if model_type != MODEL_TYPE:
            raise ValueError(f"{folder} holds a {model_type!r} model, expected {MODEL_TYPE!r}")
        if version != FORMAT_VERSION:
            raise ValueError(f"{folder} has format version {version}, this code reads {FORMAT_VERSION}")
        model = cls(FusionCNNConfig.from_dict(document), text_encoder=text_encoder)
        model.load_state_dict(load_file(folder / WEIGHTS_NAME, device=str(device)), strict=True)
        return model.to(device).eval()


def _upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
