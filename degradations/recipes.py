"""Named recipes: which degradations hit a pair, with what sampled parameters, per modality.

A recipe is planned into a list of ``Step`` records (op, modality, parameters, noise seed) by a
``random.Random`` seeded from ``(seed, recipe, level, pair name)``; applying the steps is a pure function
of the clean pair and the steps. The plan is what a manifest stores, so ``--replay`` re-applies the very
same steps and reproduces the bytes.

Physics per modality (why IR and VIS get different steps):
- night: only VIS loses light; a thermal camera sees emitted radiation and is unaffected.
- haze: both, through the same depth map, IR with a smaller extinction (the ratio grows from haze to fog).
- rain: the same drops streak both images, far fainter in LWIR.
- blur: motion blur comes from the shared platform, so both get the same kernel; defocus is per camera.
- lowres, jpeg, low_contrast, noise: each sensor separately (noise: shot + read noise on VIS, read
  noise on IR); ir_stripe: IR focal-plane arrays only; overexposure: VIS only.
Composite steps are applied in the order light meets them: scene (haze, rain), illumination, contrast,
optics (blur), sampling (lowres), sensor noise, compression.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from . import blur, compression, haze, noise, photometric, rain, resample
from .prompts import draw_prompt
from .severity import sample, sample_shared

# Order in which light meets the degradations; composites are applied in this order.
PHYSICAL_ORDER: tuple[str, ...] = (
    "haze", "rain", "lowlight", "overexposure", "low_contrast", "blur", "lowres", "noise", "ir_stripe", "jpeg",
)

# Recipe name -> the degradations it applies (None: sampled composite).
RECIPES: dict[str, tuple[str, ...] | None] = {
    "night": ("lowlight",),
    "haze": ("haze",),
    "rain": ("rain",),
    "noise": ("noise",),
    "blur": ("blur",),
    "lowres": ("lowres",),
    "jpeg": ("jpeg",),
    "low_contrast": ("low_contrast",),
    "overexposure": ("overexposure",),
    "ir_stripe": ("ir_stripe",),
    "mixed": None,
}

# Pairs a composite never combines, because one undoes the other's physics.
_EXCLUSIVE = ({"lowlight", "overexposure"},)


@dataclass(frozen=True)
class Step:
    """One op applied to one modality. ``seed`` seeds the op's own noise generator."""

    op: str
    modality: str  # "ir" or "vi"
    params: dict[str, Any]
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Step":
        return cls(op=d["op"], modality=d["modality"], params=dict(d["params"]), seed=int(d.get("seed", 0)))


@dataclass
class Plan:
    """What a recipe decided for one pair: degradations (application order), their levels, steps, prompt."""

    recipe: str
    level: int
    degradations: list[str]
    steps: list[Step]
    prompt: str
    levels: dict[str, int] = field(default_factory=dict)

    @property
    def needs_depth(self) -> bool:
        return any(OPS[s.op].needs_depth for s in self.steps)


@dataclass(frozen=True)
class _Op:
    fn: Callable[..., torch.Tensor]
    random: bool = False
    needs_depth: bool = False


OPS: dict[str, _Op] = {
    "low_light": _Op(photometric.low_light, random=True),
    "overexposure": _Op(photometric.overexposure),
    "low_contrast": _Op(photometric.low_contrast),
    "haze": _Op(haze.haze, needs_depth=True),
    "rain": _Op(rain.rain_streaks, random=True),
    "gaussian_blur": _Op(blur.gaussian_blur),
    "motion_blur": _Op(blur.motion_blur),
    "downsample": _Op(resample.downsample),
    "gaussian_noise": _Op(noise.gaussian_noise, random=True),
    "poisson_noise": _Op(noise.poisson_noise, random=True),
    "stripe_noise": _Op(noise.stripe_noise, random=True),
    "jpeg": _Op(compression.jpeg),
}


def item_seed(seed: int, name: str, recipe: str, level: int) -> int:
    """A 63-bit seed that depends only on its arguments (not on worker, order or platform)."""
    digest = hashlib.sha256(f"{seed}/{recipe}/{level}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _seed(rng: random.Random) -> int:
    return rng.getrandbits(63)


# --- one planner per degradation: level + rng -> steps -------------------------------------------------

def _plan_lowlight(level: int, rng: random.Random) -> list[Step]:
    params = {p: sample(rng, "lowlight", p, level) for p in ("exposure", "photons", "read_sigma")}
    return [Step("low_light", "vi", params, _seed(rng))]


def _plan_overexposure(level: int, rng: random.Random) -> list[Step]:
    return [Step("overexposure", "vi", {"gain": sample(rng, "overexposure", "gain", level)})]


def _plan_haze(level: int, rng: random.Random) -> list[Step]:
    beta = sample(rng, "haze", "beta", level)
    near = sample(rng, "haze", "near", level)  # one scene, one geometry: shared by both modalities
    ir_ratio = sample(rng, "haze", "ir_ratio", level)
    return [
        Step("haze", "vi", {"beta": beta, "near": near, "airlight": sample_shared(rng, "haze_airlight_vi")}),
        Step("haze", "ir", {"beta": beta * ir_ratio, "near": near,
                            "airlight": sample_shared(rng, "haze_airlight_ir")}),
    ]


def _plan_rain(level: int, rng: random.Random) -> list[Step]:
    drops = {
        "density": sample(rng, "rain", "density", level),
        "length": sample(rng, "rain", "length", level),
        "angle_deg": sample_shared(rng, "rain_angle"),
    }
    intensity = sample(rng, "rain", "intensity", level)
    ir_intensity = intensity * sample_shared(rng, "rain_ir_opacity")
    seed = _seed(rng)  # the same seed draws the same drops in both images
    return [
        Step("rain", "vi", {**drops, "intensity": intensity}, seed),
        Step("rain", "ir", {**drops, "intensity": ir_intensity}, seed),
    ]


def _plan_blur(level: int, rng: random.Random) -> list[Step]:
    if rng.random() < 0.5:
        params = {"length": sample(rng, "motion_blur", "length", level),
                  "angle_deg": sample_shared(rng, "motion_angle")}
        return [Step("motion_blur", m, params) for m in ("vi", "ir")]
    steps = []
    for modality in ("vi", "ir"):
        sigma = sample(rng, "gaussian_blur", "sigma", level)
        params = {"sigma_x": sigma, "sigma_y": sigma * sample_shared(rng, "blur_aspect"),
                  "theta": rng.uniform(0.0, 3.141592653589793)}
        steps.append(Step("gaussian_blur", modality, params))
    return steps


def _plan_lowres(level: int, rng: random.Random) -> list[Step]:
    factor = int(sample(rng, "lowres", "factor", level))
    return [Step("downsample", m, {"factor": factor, "keep_size": True}) for m in ("vi", "ir")]


def _plan_noise(level: int, rng: random.Random) -> list[Step]:
    sigma = sample(rng, "noise", "sigma", level)
    return [
        Step("poisson_noise", "vi", {"photons": sample(rng, "noise", "photons", level)}, _seed(rng)),
        Step("gaussian_noise", "vi", {"sigma": sigma}, _seed(rng)),
        Step("gaussian_noise", "ir", {"sigma": sigma * sample_shared(rng, "ir_noise_ratio")}, _seed(rng)),
    ]


def _plan_jpeg(level: int, rng: random.Random) -> list[Step]:
    return [Step("jpeg", m, {"quality": int(round(sample(rng, "jpeg", "quality", level)))}) for m in ("vi", "ir")]


def _plan_low_contrast(level: int, rng: random.Random) -> list[Step]:
    return [Step("low_contrast", m, {"factor": sample(rng, "low_contrast", "factor", level)}) for m in ("vi", "ir")]


def _plan_ir_stripe(level: int, rng: random.Random) -> list[Step]:
    return [Step("stripe_noise", "ir", {"sigma": sample(rng, "ir_stripe", "sigma", level)}, _seed(rng))]


_PLANNERS: dict[str, Callable[[int, random.Random], list[Step]]] = {
    "lowlight": _plan_lowlight,
    "overexposure": _plan_overexposure,
    "haze": _plan_haze,
    "rain": _plan_rain,
    "blur": _plan_blur,
    "lowres": _plan_lowres,
    "noise": _plan_noise,
    "jpeg": _plan_jpeg,
    "low_contrast": _plan_low_contrast,
    "ir_stripe": _plan_ir_stripe,
}


def _draw_composite(rng: random.Random) -> list[str]:
    """1 to 3 distinct degradations, never an exclusive pair."""
    count = rng.randint(1, 3)
    while True:
        chosen = set(rng.sample(PHYSICAL_ORDER, count))
        if not any(pair <= chosen for pair in _EXCLUSIVE):
            return [d for d in PHYSICAL_ORDER if d in chosen]


def plan(recipe: str, level: int, seed: int) -> Plan:
    """Sample the steps of ``recipe`` at ``level`` from ``seed`` (use ``item_seed`` for a pair).

    In a composite every component is applied at the requested level.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if not 1 <= level <= 5:
        raise ValueError(f"severity level must be 1..5, got {level}")
    rng = random.Random(seed)
    fixed = RECIPES[recipe]
    degradations = list(fixed) if fixed is not None else _draw_composite(rng)
    steps = [step for d in degradations for step in _PLANNERS[d](level, rng)]
    prompt = draw_prompt(rng, degradations)
    return Plan(recipe, level, degradations, steps, prompt, {d: level for d in degradations})


def apply_steps(
    steps: list[Step], ir: torch.Tensor, vi: torch.Tensor, depth: torch.Tensor | None = None,
    *, quantize: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``steps`` in order to the clean pair.

    The result is rounded to 8-bit levels (``quantize``), as a camera encodes its frames and as every image
    file holds them: a model trained on degraded floats learns to amplify gradations finer than a grey
    level, which real footage does not have, and stretches real 8-bit steps into contour bands (dehazing
    divides by transmissions down to 0.1). A pair without steps is returned as given.

    Args:
        ir: (B, 1, H, W) in [0, 1]. vi: (B, C, H, W) in [0, 1], C in {1, 3}.
        depth: (B, 1, H, W) normalised depth in [0, 1] (0 near), needed by haze steps.
        quantize: round the degraded pair to 8-bit levels; False keeps the floats.
    Returns:
        The degraded ``(ir, vi)``, same shapes.
    """
    images = {"ir": ir, "vi": vi}
    for step in steps:
        op = OPS[step.op]
        kwargs = dict(step.params)
        if op.random:
            kwargs["generator"] = torch.Generator().manual_seed(step.seed)
        if op.needs_depth:
            if depth is None:
                raise ValueError(f"step {step.op!r} needs a depth map")
            kwargs["depth"] = depth
        images[step.modality] = op.fn(images[step.modality], **kwargs)
    if quantize and steps:
        return photometric.round_to_8bit(images["ir"]), photometric.round_to_8bit(images["vi"])
    return images["ir"], images["vi"]
