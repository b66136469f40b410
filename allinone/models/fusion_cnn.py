"""FusionCNN: a small, degradation-conditioned network that restores and fuses IR and VIS into colour.

Inputs: degraded IR (B, 1, H, W) and degraded VIS (B, 3, H, W) (or (B, 1, H, W) gray), floats in
[0, 1]; output: fused RGB (B, 3, H, W) in [0, 1]. It works in YCbCr (kornia.color conventions):

    VIS     = lerp(VIS, GF(VIS), d)                          (only with ``denoise_levels``)
    VIS     = lerp(VIS, DCP(deband(VIS)), h)                 (only with ``dehaze_prior``)
    Y_vis   = luma of VIS
    Y_enh   = k * LE^n(Y_vis),  LE(x) = x + alpha x (1 - x)     (Zero-DCE++ curve, as in LEFuse)
    Y       = w Y_enh + (1 - w) IR + H(w) / s + detail   (w = sigmoid(l + s (Y_enh - IR)): smooth max)
    C       = g * C_vis + offset                              (chroma C = (Cb, Cr) - 0.5, centred)
    RGB     = clamp(clamp(Y) + M C)                           (M: kornia's YCbCr -> RGB coefficients)

``DCP`` is the dark-channel-prior dehazing (:mod:`allinone.models.dark_channel`), taken in by the predicted
amount h in [0, 1] where the network sees haze. It divides by transmissions down to 0.1, which stretches the
8-bit steps of a smooth veil into contour bands, so it inverts a debanded VIS: ``deband``
(:mod:`allinone.models.guided_filter`) smooths out steps below ``deband_levels`` grey levels and keeps
stronger edges. ``GF`` is an edge-preserving smoothing (a self-guided filter,
:func:`allinone.models.guided_filter.smooth_below`, with eps = (``denoise_levels`` / 255)^2) taken in by the
predicted amount d where the network sees noise: it flattens variations below about ``denoise_levels`` grey
levels at full resolution, which the 1/2-resolution detail head cannot do without also blurring edges. The
curve brightens dark regions (alpha > 0) or tames glare (alpha < 0); the luma gain k and the smooth part of
``detail`` form a local affine map that restores contrast under haze; w decides, per pixel, between the
enhanced VIS and the IR; ``detail`` also removes noise, rain and blur. ``C_vis`` is the VIS chroma at half
resolution (2x2 mean, as in 4:2:0); the chroma gain g pulls it toward neutral (noise, colour of a haze veil)
or re-saturates it (haze, low light) and ``offset`` removes colour casts, so the degraded chroma is not
copied. With ``full_resolution_chroma`` C_vis is the VIS chroma itself, so where the output keeps the VIS luma
it keeps the VIS pixels exactly (the 2x2 means change how R, G and B round to 8 bits, and with them the
luma). The maps alpha, k, w, g, offset are smooth: predicted at 1/4 resolution and upsampled bilinearly (h
and d too); ``detail`` is predicted at 1/2 resolution, four sub-pixels per position, and pixel-shuffled to full
resolution (as in FFDNet).

A U-Net computes those maps. VIS and IR features meet at 1/2 resolution in a brightness-adaptive gate
(after BA-Fusion): a per-pixel, per-channel gate computed from the VIS features and the local VIS
illumination decides how much of each modality each channel carries. The degradation embedding (B, E)
of :class:`allinone.conditioning.DegradationEmbedder` modulates every residual block through FiLM and
shifts the gate; a zero embedding gives identity modulation.

Real time on a CPU shapes the layout: only pointwise operations and two stride-2 stem convolutions
touch full resolution, the 1/2-resolution level is thin, the residual blocks are depthwise-separable,
and operations are few, since on a CPU each one also costs a synchronisation of the threads. No
operation pools globally, so a pixel depends only on its neighbourhood (the receptive field reaches
about 100 pixels each way, most of the influence within 50) and tiled inference
(:mod:`allinone.tiling`) approaches whole-frame inference as the overlap grows. The one exception is
the airlight colour of the dehazing prior, estimated per image (per tile under tiling). The two blends' images
(the smoothed and the dehazed VIS, :meth:`FusionCNN.input_priors`) depend on the input alone, so with a
``prior_executor`` they are computed in a second thread while the U-Net runs: on a CPU two threads that
each run whole operations go faster than two threads that share every operation. At initialisation the
output is close to a smooth max-select of the IR and the VIS luma with the VIS chroma, so training
starts from a sane baseline.
"""
from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from allinone.baselines import NEUTRAL_CHROMA, is_gray
from allinone.conditioning import TEXT_EMBED_DIM, Condition, DegradationEmbedder, SentenceEncoder
from allinone.models.dark_channel import dark_channel_dehaze
from allinone.models.guided_filter import deband, smooth_below
from allinone.models.serialization import config_from_dict, load_weights, read_config, save_model
from allinone.models.worker import submit_in_callers_mode
from degradations.labels import DEGRADATION_TYPES

MODEL_TYPE = "allinone-fusion-cnn"
# 2: the luma selection became a smooth maximum (smooth_select); version-1 weights would load but give
# other images, so they are refused.
FORMAT_VERSION = 2

# The colour transforms of kornia.color (rgb_to_ycbcr, ycbcr_to_rgb) written as matrices, so each is
# one operation: Y = RGB_TO_LUMA . (R, G, B); (Cb - 0.5, Cr - 0.5) = RGB_TO_CHROMA @ (R, G, B), that is
# 0.564 (B - Y) and 0.713 (R - Y); (R, G, B) = Y + CHROMA_TO_RGB @ (Cb - 0.5, Cr - 0.5). Chroma is kept
# centred, so neutral chroma adds exact zeros and gray stays exactly gray.
RGB_TO_LUMA = (0.299, 0.587, 0.114)
RGB_TO_CHROMA = (
    (-0.564 * 0.299, -0.564 * 0.587, 0.564 * (1.0 - 0.114)),
    (0.713 * (1.0 - 0.299), -0.713 * 0.587, -0.713 * 0.114),
)
CHROMA_TO_RGB = ((0.0, 1.4025245442), (-0.3443401356, -0.7144034731), (1.7730496454, 0.0))

# Layers that produce the per-pixel maps start tiny, so the initial output is the smooth max-select
# baseline while gradients still reach every layer from the first step.
HEAD_INIT_STD = 1e-3
# Selection sharpness s = SELECT_SCALE * softplus(head output), the inverse temperature of the smooth
# maximum: about 28 at init, so sources 0.1 apart are weighted 16 to 1 and the entropy term adds at
# most ln 2 / s = 0.025 (a max-select prior the training can relax).
SELECT_SCALE = 40.0
# The dehazing and denoising blends start at sigmoid(-2.5) = 0.08: near the plain VIS, so a model grown
# with one begins close to the model it was fine-tuned from, yet where the sigmoid still passes gradient
# (at -6 it passes 40 times less, and a fine-tune barely moved the blend off 0).
BLEND_INIT_LOGIT = -2.5
# The prior's transmission is estimated on a 4x coarser grid (dark_channel_dehaze's stride): its windowed
# minima, the costly part, then run on 1/16 of the pixels, and the smooth transmission barely changes
# (tests/test_dark_channel.py holds the coarse inversion to the full-resolution one).
DEHAZE_PRIOR_STRIDE = 4
# The denoising smoothing fits its filter in windows of about 5 pixels on a 2x coarser grid.
DENOISE_WINDOW = 5
DENOISE_SUBSAMPLE = 2


@dataclass(frozen=True)
class FusionCNNConfig:
    """Architecture of a FusionCNN; saved as ``config.json`` next to the weights.

    ``widths[i]`` is the channel count at resolution 1 / 2**(i + 1). ``depths[i]`` is the number of
    residual blocks of encoder level i, ``decoder_depths[i]`` that of decoder level i (every level but
    the coarsest; 0 is allowed). ``max_gain`` bounds the luma and chroma gains to [1/max_gain, max_gain].
    """

    widths: tuple[int, ...] = (12, 24, 48, 96)
    depths: tuple[int, ...] = (0, 1, 2, 2)
    decoder_depths: tuple[int, ...] = (1, 1, 1)
    expansion: int = 2
    embed_dim: int = 64
    embed_hidden_dim: int = 128
    curve_iterations: int = 4
    max_gain: float = 4.0
    degradation_types: tuple[str, ...] = DEGRADATION_TYPES
    text_dim: int = TEXT_EMBED_DIM
    # Blend the dark-channel-prior dehazing of the VIS into the VIS, by a predicted per-pixel amount.
    dehaze_prior: bool = False
    # Deband the VIS the dehazing prior inverts below this many 8-bit grey levels, so that dividing by a low
    # transmission does not stretch its quantization steps into contour bands (0: off).
    deband_levels: float = 0.0
    # Blend an edge-preserving smoothing of the VIS (a self-guided filter that flattens variations below about
    # this many 8-bit grey levels) into the VIS by a predicted per-pixel amount, where the network sees noise.
    denoise_levels: float = 0.0
    # Restore chroma at full resolution instead of from the 2x2 means of the VIS chroma (4:2:0). Each 8-bit
    # output channel then rounds like the VIS channel it comes from, so an output that keeps the VIS luma
    # keeps the VIS pixels exactly; from 2x2 means, R, G and B round differently and the luma recomputed from
    # them departs from the VIS luma by a grey level here and there (docs/BENCHMARKS.md, SSIM section).
    full_resolution_chroma: bool = False

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or len(self.depths) != len(self.widths):
            raise ValueError("need at least 2 widths (1/2 and 1/4 resolution) and one depth per width")
        if len(self.decoder_depths) != len(self.widths) - 1:
            raise ValueError("need one decoder depth per level but the coarsest")
        if self.deband_levels < 0 or self.denoise_levels < 0:
            raise ValueError(f"deband_levels and denoise_levels must be >= 0, got {self.deband_levels}, "
                             f"{self.denoise_levels}")

    @classmethod
    def from_dict(cls, values: dict) -> "FusionCNNConfig":
        return config_from_dict(cls, values)


FUSION_CNN_CONFIGS: dict[str, FusionCNNConfig] = {
    "tiny": FusionCNNConfig(
        widths=(12, 24, 48, 96), depths=(0, 1, 2, 2), decoder_depths=(1, 1, 1), embed_dim=48, embed_hidden_dim=96
    ),
    "small": FusionCNNConfig(
        widths=(12, 32, 64, 128), depths=(0, 1, 3, 3), decoder_depths=(1, 1, 2), embed_dim=64, embed_hidden_dim=128
    ),
}


#################################################################################
#                                 Building blocks                               #
#################################################################################


class FiLM(nn.Module):
    """Feature-wise linear modulation ``x * (1 + scale(e)) + shift(e)``; returns (scale, shift), each (B, C).

    The projection starts with zero bias, so a zero embedding gives identity modulation.
    """

    def __init__(self, embed_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, 2 * channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small weights rather than zeros, so the embedder receives gradients from the first step.
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)  # zero embedding -> identity modulation

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift = self.proj(embedding).chunk(2, dim=1)
        return scale, shift


def modulated_depthwise_conv(
    x: torch.Tensor, conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """``conv(x) * (1 + scale) + shift`` for a depthwise ``conv`` and (B, C) ``scale``, ``shift``, as one conv.

    The per-sample modulation is folded into per-sample weights (as in StyleGAN2's modulated conv):
    the batch goes into the channel axis and each (sample, channel) pair is its own group. One
    operation instead of three: on a CPU every operation also costs a synchronisation of the threads.
    """
    batch, channels, height, width = x.shape
    gain = 1.0 + scale
    weight = (conv.weight[None] * gain[:, :, None, None, None]).flatten(0, 1)  # (B*C, 1, k, k)
    bias = (gain * conv.bias + shift).flatten()
    folded = x.reshape(1, batch * channels, height, width)
    out = F.conv2d(folded, weight, bias, padding=conv.padding, groups=batch * channels)
    return out.view(batch, channels, height, width)


class ResBlock(nn.Module):
    """Depthwise 3x3 conv -> FiLM -> pointwise expand -> ReLU -> pointwise project, plus the input."""

    def __init__(self, channels: int, expansion: int, embed_dim: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.film = FiLM(embed_dim, channels)
        self.expand = nn.Conv2d(channels, expansion * channels, 1)
        self.project = nn.Conv2d(expansion * channels, channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = modulated_depthwise_conv(x, self.spatial, *self.film(embedding))
        return x + self.project(F.relu(self.expand(h)))


class Stage(nn.Module):
    """A run of residual blocks at one resolution (possibly none)."""

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
        return resample(self.proj(x), 2.0)


class BrightnessAdaptiveGate(nn.Module):
    """Mix VIS and IR features per pixel and channel, steered by the VIS brightness (BA-Fusion).

    ``g = sigmoid(W [f_vis, illumination] + shift(e))``, ``f = g f_vis + (1 - g) f_ir``: where the VIS
    image is dark or glaring the gate can hand channels over to the IR features.
    """

    def __init__(self, channels: int, embed_dim: int) -> None:
        super().__init__()
        self.logits = nn.Conv2d(channels + 1, channels, 1)
        self.shift = nn.Linear(embed_dim, channels)

    def forward(
        self, vis: torch.Tensor, ir: torch.Tensor, illumination: torch.Tensor, embedding: torch.Tensor
    ) -> torch.Tensor:
        logits = self.logits(torch.cat([vis, illumination], dim=1)) + self.shift(embedding)[:, :, None, None]
        return torch.lerp(ir, vis, torch.sigmoid(logits))


def resample(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resampling of (B, C, H, W) by ``scale`` (half-pixel centres, no antialiasing).

    Channels are folded into the batch: PyTorch's CPU kernel is several times slower on some
    channel counts (3 among them) than on single-channel images.
    """
    batch, channels = x.shape[:2]
    out = F.interpolate(x.reshape(batch * channels, 1, *x.shape[2:]), scale_factor=scale, mode="bilinear")
    return out.view(batch, channels, *out.shape[2:])


def half_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over 2x2 blocks (B, C, H, W) -> (B, C, H/2, W/2).

    Bilinear resampling at scale 1/2 samples exactly the block centres; on CPU it is several times
    faster than avg_pool2d.
    """
    return resample(x, 0.5)


def local_illumination(luma: torch.Tensor) -> torch.Tensor:
    """Smooth illumination (B, 1, H/2, W/2) of a luma image (B, 1, H, W): its mean over about 24x24 pixels.

    Averaged over 8x8 blocks, smoothed by a 3x3 box and brought back to half resolution; local only,
    so the gate behaves the same on tiles and on whole frames.
    """
    coarse = F.avg_pool2d(luma, 8)
    coarse = F.avg_pool2d(coarse, 3, stride=1, padding=1, count_include_pad=False)
    return resample(coarse, 4.0)


def apply_curve(luma: torch.Tensor, alpha: torch.Tensor, iterations: int) -> torch.Tensor:
    """Zero-DCE++ light-enhancement curve: ``x <- x + alpha x (1 - x)``, applied ``iterations`` times.

    ``alpha`` (B, 1, H, W) in [-1, 1]; each step maps [0, 1] onto itself monotonically, positive alpha
    brightens (most where the image is dark), negative alpha darkens.
    """
    for _ in range(iterations):
        luma = torch.addcmul(luma, alpha, luma * (1.0 - luma))
    return luma


def bounded_gain(logits: torch.Tensor, max_gain: float) -> torch.Tensor:
    """Map logits to gains in [1/max_gain, max_gain], symmetric in log scale; logit 0 gives gain 1."""
    return torch.exp(math.log(max_gain) * torch.tanh(logits))


def smooth_select(a: torch.Tensor, b: torch.Tensor, logit: torch.Tensor, sharpness: torch.Tensor) -> torch.Tensor:
    """Smooth maximum of ``a`` and ``b`` with a preference: ``lerp(a, b, w) + H(w) / s``.

    ``w = sigmoid(z)``, ``z = logit + s (b - a)``, ``H`` the binary entropy (nats), ``s`` the sharpness.
    With ``logit = 0`` this is exactly ``log(exp(s a) + exp(s b)) / s`` (the Gibbs identity:
    log-sum-exp = expectation under the softmax + temperature x entropy): it never falls below either
    source, tends to max-select as ``s`` grows, and is smooth where the sources cross, so the
    selection leaves no seams. A plain blend ``lerp(a, b, w)`` (the same without the entropy term, the
    first shipped model's rule) dips below the brighter source wherever the two are close. A
    negative (positive) ``logit`` prefers ``a`` (``b``). Computed as ``a + (softplus(z) - w logit) / s``
    (``H(w) = softplus(z) - w z``): stable for any ``z`` and a few operations, all pointwise.
    All tensors broadcast; ``sharpness`` > 0.
    """
    z = torch.addcmul(logit, sharpness, b - a)
    return a + (F.softplus(z) - torch.sigmoid(z) * logit) / sharpness


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple`` (reflect; replicate when the image is too small)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def apply_colour_matrix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-pixel linear map of the channels: (K, C) matrix, (B, C, H, W) image -> (B, K, H, W)."""
    return torch.matmul(matrix, x.flatten(2)).unflatten(2, x.shape[-2:])


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
        widths, embed_dim, expansion = config.widths, config.embed_dim, config.expansion
        self.embedder = DegradationEmbedder(
            embed_dim,
            num_labels=len(config.degradation_types),
            hidden_dim=config.embed_hidden_dim,
            text_dim=config.text_dim,
            text_encoder=text_encoder,
        )
        # Stride-2 stems read 4x4 full-resolution windows straight into half resolution. The VIS stem
        # reads RGB: any colour transform of its input (YCbCr included) is absorbed by its weights.
        self.vis_stem = nn.Conv2d(3, widths[0], 4, stride=2, padding=1)
        self.ir_stem = nn.Conv2d(1, widths[0], 4, stride=2, padding=1)
        self.gate = BrightnessAdaptiveGate(widths[0], embed_dim)
        # Level i works at 1 / 2**(i + 1) resolution; downsamples[i] leads from level i to i + 1,
        # upsamples[i] back from level i + 1 to i.
        self.encoder = nn.ModuleList(Stage(w, d, expansion, embed_dim) for w, d in zip(widths, config.depths))
        self.decoder = nn.ModuleList(
            Stage(w, d, expansion, embed_dim) for w, d in zip(widths, config.decoder_depths)
        )
        self.downsamples = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], 2, stride=2) for i in range(len(widths) - 1)
        )
        self.upsamples = nn.ModuleList(Upsample(widths[i + 1], widths[i]) for i in range(len(widths) - 1))
        # Smooth maps from the decoded 1/4-resolution features: curve alpha, luma gain k, fusion weight
        # logit and selection sharpness (to full resolution), chroma log-gains (2) and offsets (2) (to
        # half resolution).
        self.smooth_head = nn.Conv2d(widths[1], 4 + 4, 1)
        # Luma detail from the decoded 1/2-resolution features: 4 sub-pixels per position.
        self.detail_head = nn.Conv2d(widths[0], 4, 1)
        # How much of the dark-channel dehazing to take, per pixel (a separate head, so weights of a
        # model without it load unchanged and the model starts from what it was).
        self.dehaze_head = nn.Conv2d(widths[1], 1, 1) if config.dehaze_prior else None
        self.denoise_head = nn.Conv2d(widths[1], 1, 1) if config.denoise_levels > 0 else None
        # Where input_priors run while the U-Net runs (see start_input_priors); None: in line, before it.
        self.prior_executor: Executor | None = None
        self.register_buffer("rgb_to_luma", torch.tensor(RGB_TO_LUMA).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_to_chroma", torch.tensor(RGB_TO_CHROMA), persistent=False)
        self.register_buffer("chroma_to_rgb", torch.tensor(CHROMA_TO_RGB), persistent=False)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, ResBlock):
                # Residual branches start small so each stage begins close to the identity.
                nn.init.normal_(module.project.weight, std=0.02)
            elif isinstance(module, FiLM):
                module.reset_parameters()
            elif isinstance(module, BrightnessAdaptiveGate):
                nn.init.normal_(module.shift.weight, std=0.02)
                nn.init.zeros_(module.shift.bias)
        for head in (self.smooth_head, self.detail_head, self.dehaze_head, self.denoise_head):
            if head is not None:
                nn.init.normal_(head.weight, std=HEAD_INIT_STD)
                nn.init.zeros_(head.bias)
        for head in (self.dehaze_head, self.denoise_head):
            if head is not None:
                nn.init.constant_(head.bias, BLEND_INIT_LOGIT)
        self.embedder.initialize_weights()

    @property
    def pad_multiple(self) -> int:
        # The coarsest level is 1 / 2**len(widths); the illumination map averages 8x8 blocks (and debanding
        # fits on a 4x coarser grid).
        return 2 ** max(len(self.config.widths), 3)

    def embed(self, condition: Condition | None, batch_size: int) -> torch.Tensor:
        """Degradation embedding (B, E) of a condition (None = unconditioned)."""
        return self.embedder(condition, batch_size=batch_size)

    @property
    def has_input_priors(self) -> bool:
        return self.denoise_head is not None or self.dehaze_head is not None

    def input_priors(self, vi: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The parameter-free images the blends take in: (denoised VIS, dehazed VIS), each (B, 3, H, W), None for
        a blend the model does not have; ``vi`` (B, 3 or 1, H, W), already padded. No gradient flows through them
        (the gradient reaches the blend weights), and they depend on the input alone."""
        denoised = dehazed = None
        with torch.no_grad():
            if self.denoise_head is not None:
                denoised = smooth_below(vi.expand(-1, 3, -1, -1), self.config.denoise_levels, DENOISE_WINDOW,
                                        DENOISE_SUBSAMPLE)
            if self.dehaze_head is not None:
                hazy = deband(vi, self.config.deband_levels).expand(-1, 3, -1, -1)
                dehazed, _ = dark_channel_dehaze(hazy, stride=DEHAZE_PRIOR_STRIDE)
        return denoised, dehazed

    def start_input_priors(self, vi: torch.Tensor) -> Callable[[], tuple[torch.Tensor | None, torch.Tensor | None]]:
        """Begin :meth:`input_priors` of ``vi``; returns the call that gives them.

        With ``prior_executor`` set they are computed there, while the U-Net runs in the calling thread: on a
        CPU, two threads each running whole operations beat two threads sharing every operation
        (docs/BENCHMARKS.md, speed section). The result is the same either way.
        """
        if self.prior_executor is None or not self.has_input_priors:
            priors = self.input_priors(vi)
            return lambda: priors
        return submit_in_callers_mode(self.prior_executor, lambda: self.input_priors(vi)).result

    def forward(
        self, ir: torch.Tensor, vi: torch.Tensor, embedding: torch.Tensor | Condition | None = None
    ) -> torch.Tensor:
        """Fuse ``ir`` (B, 1, H, W) and ``vi`` (B, 3 or 1, H, W) into RGB (B, 3, H, W) in [0, 1].

        ``embedding`` is a (B, E) degradation embedding, a :class:`Condition` to embed, or None
        (unconditioned: the learned null embedding). Any H, W: inputs are reflect-padded to a multiple
        of ``pad_multiple`` and the output cropped back.
        """
        batch, _, height, width = ir.shape
        if not isinstance(embedding, torch.Tensor):
            embedding = self.embed(embedding, batch)
        gray = is_gray(vi)
        ir, vi = pad_to_multiple(ir, self.pad_multiple), pad_to_multiple(vi, self.pad_multiple)
        priors = self.start_input_priors(vi)
        vis_rgb = vi.expand(-1, 3, -1, -1)
        vis_luma = vi if vi.shape[1] == 1 else F.conv2d(vi, self.rgb_to_luma)

        # U-Net: gate the two modalities at 1/2 resolution, go down to the coarsest level and back.
        vis = F.relu(self.vis_stem(vis_rgb))
        thermal = F.relu(self.ir_stem(ir))
        x = self.encoder[0](self.gate(vis, thermal, local_illumination(vis_luma), embedding), embedding)
        skips = [x]
        for level in range(1, len(self.encoder)):
            x = self.encoder[level](self.downsamples[level - 1](x), embedding)
            skips.append(x)
        for level in reversed(range(len(self.decoder))):
            if level == 0:
                x_quarter = x  # the decoded 1/4-resolution features
                smooth = self.smooth_head(x_quarter)
            x = self.decoder[level](self.upsamples[level](x) + skips[level], embedding)

        # Luma: a smooth maximum of the IR and the curve-enhanced, gained VIS, plus detail. The smooth
        # 1/4-resolution logit sets a preference for one source; the full-resolution term
        # sharpness * (enhanced - IR) inside smooth_select keeps, pixel by pixel, the brighter one: a
        # smooth weight alone averages the two sources at every edge and so flattens the stronger
        # one's gradients.
        denoised, dehazed = priors()
        if denoised is not None:
            vis_rgb = torch.lerp(vis_rgb, denoised, resample(torch.sigmoid(self.denoise_head(x_quarter)), 4.0))
            vis_luma = F.conv2d(vis_rgb, self.rgb_to_luma)
        if dehazed is not None:
            amount = resample(torch.sigmoid(self.dehaze_head(x_quarter)), 4.0)
            vis_rgb = torch.lerp(vis_rgb, dehazed, amount)
            vis_luma = F.conv2d(vis_rgb, self.rgb_to_luma)
        alpha = torch.tanh(smooth[:, :1])
        luma_gain = bounded_gain(smooth[:, 1:2], self.config.max_gain)
        sharpness = SELECT_SCALE * F.softplus(smooth[:, 3:4])
        alpha, luma_gain, logit, sharpness = resample(
            torch.cat([alpha, luma_gain, smooth[:, 2:3], sharpness], dim=1), 4.0).split(1, dim=1)
        enhanced = luma_gain * apply_curve(vis_luma, alpha, self.config.curve_iterations)
        detail = F.pixel_shuffle(self.detail_head(x), 2)
        luma = (smooth_select(ir, enhanced, logit, sharpness) + detail).clamp(0.0, 1.0)

        # Chroma at 1/2 (or full) resolution, centred on neutral: C = g * C_vis + offset.
        full = self.config.full_resolution_chroma
        chroma_gain, offset = resample(smooth[:, 4:], 4.0 if full else 2.0).split(2, dim=1)
        vis_chroma = apply_colour_matrix(self.rgb_to_chroma, vis_rgb if full else half_mean(vis_rgb))
        chroma = bounded_gain(chroma_gain, self.config.max_gain) * vis_chroma + offset
        chroma = chroma.clamp(-NEUTRAL_CHROMA, NEUTRAL_CHROMA)
        if gray.any():
            chroma = torch.where(gray[:, None, None, None], torch.zeros_like(chroma), chroma)
        colour = apply_colour_matrix(self.chroma_to_rgb, chroma)
        if not full:
            colour = resample(colour, 2.0)
        return (luma + colour).clamp(0.0, 1.0)[..., :height, :width]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``model.safetensors`` (all weights, embedder included) and ``config.json`` to ``folder``."""
        save_model(self, folder, MODEL_TYPE, FORMAT_VERSION, asdict(self.config))

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str | torch.device = "cpu", text_encoder: SentenceEncoder | None = None,
        **config_changes,
    ) -> "FusionCNN":
        """Rebuild a model written by :meth:`save_pretrained`, in eval mode. MiniLM comes from its package.

        ``config_changes`` (e.g. ``dehaze_prior=True``) grow the saved model into a larger one to fine-tune:
        the saved weights load, the parts the change adds keep their initialisation (which leaves the
        output almost unchanged). A change that reshapes saved weights raises.
        """
        document = read_config(folder, MODEL_TYPE, FORMAT_VERSION)
        config = FusionCNNConfig.from_dict(document)
        if config_changes:
            config = replace(config, **config_changes)
        model = cls(config, text_encoder=text_encoder)
        load_weights(model, folder, device, allow_missing=bool(config_changes))
        return model.to(device).eval()
