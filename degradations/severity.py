"""Parameter ranges of every degradation at severity levels 1 (mild) to 5 (severe).

``LEVELS[degradation][param][level - 1]`` is a ``(low, high)`` range; a recipe samples each parameter
uniformly inside it. Fixed (level-independent) ranges live in ``SHARED``. Units follow the op that
consumes the parameter (see its docstring); images are in [0, 1].

``scripts/severity_table.py`` renders these tables into docs/DEGRADATIONS.md, so the docs cannot drift
from the code.
"""
from __future__ import annotations

import random

Range = tuple[float, float]

LEVELS: dict[str, dict[str, list[Range]]] = {
    # VIS low light (photometric.low_light): exposure scales linear radiance; photons is the full-well
    # count at linear 1 for the night exposure, so shot noise grows as light falls; read noise in linear units.
    "lowlight": {
        "exposure": [(0.35, 0.5), (0.2, 0.35), (0.1, 0.2), (0.05, 0.1), (0.025, 0.05)],
        "photons": [(3000, 6000), (1500, 3000), (800, 1500), (400, 800), (200, 400)],
        "read_sigma": [(0.0003, 0.0006), (0.0006, 0.001), (0.001, 0.0015), (0.0015, 0.0025), (0.0025, 0.004)],
    },
    # VIS overexposure (photometric.overexposure): linear gain before sensor saturation.
    "overexposure": {
        "gain": [(1.3, 1.6), (1.6, 2.0), (2.0, 2.6), (2.6, 3.4), (3.4, 4.5)],
    },
    # Haze (haze.haze): VIS extinction coefficient per farthest distance (exp(-beta) is the far-field
    # transmission); distance of the nearest scene point as a fraction of the farthest (0 leaves the
    # foreground clear, larger values veil the whole frame as fog does); IR extinction relative to VIS
    # (the particles grow from haze to fog, see degradations/haze.py). Level 5 is calibrated to the real
    # AWFusion fog pairs of ../shared/data/eval (scripts/dehaze_prior_check.py, second table): their far
    # field is a white-out while the road in front of the camera stays clear, so its nearest point may be
    # at the camera (near from 0) with a steeper extinction, which keeps the median VIS transmission of
    # theirs. (With near >= 0.35 every level-5 frame was veiled to the bottom row, and the blind estimator
    # read the real fog, whose lower crops are clear, as haze:1.)
    "haze": {
        "beta": [(0.3, 0.6), (0.6, 1.0), (1.0, 1.5), (1.5, 2.2), (3.0, 4.5)],
        "near": [(0.0, 0.05), (0.05, 0.1), (0.1, 0.2), (0.2, 0.35), (0.0, 0.5)],
        "ir_ratio": [(0.03, 0.06), (0.05, 0.08), (0.07, 0.12), (0.15, 0.3), (0.3, 0.5)],
    },
    # Rain (rain.rain_streaks): drop density per pixel, streak length in px, streak opacity.
    "rain": {
        "density": [(0.001, 0.002), (0.002, 0.004), (0.004, 0.007), (0.007, 0.011), (0.011, 0.016)],
        "length": [(6, 10), (10, 15), (15, 21), (21, 28), (28, 36)],
        "intensity": [(0.25, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.75), (0.75, 0.9)],
    },
    # Defocus (blur.gaussian_blur): sigma in px of the major axis.
    "gaussian_blur": {
        "sigma": [(0.6, 1.0), (1.0, 1.6), (1.6, 2.4), (2.4, 3.2), (3.2, 4.2)],
    },
    # Camera shake / platform motion (blur.motion_blur): streak length in px.
    "motion_blur": {
        "length": [(3, 6), (6, 10), (10, 15), (15, 21), (21, 29)],
    },
    # Resolution loss (resample.downsample): integer factor, fixed per level.
    "lowres": {
        "factor": [(2, 2), (3, 3), (4, 4), (6, 6), (8, 8)],
    },
    # Sensor noise (noise.poisson_noise + noise.gaussian_noise): photons at full scale, read noise sigma.
    "noise": {
        "photons": [(800, 1500), (400, 800), (200, 400), (100, 200), (50, 100)],
        "sigma": [(0.01, 0.02), (0.02, 0.035), (0.035, 0.05), (0.05, 0.07), (0.07, 0.1)],
    },
    # Compression (compression.jpeg): JPEG quality.
    "jpeg": {
        "quality": [(60, 80), (45, 60), (30, 45), (20, 30), (10, 20)],
    },
    # Low contrast (photometric.low_contrast): contrast factor around the image mean.
    "low_contrast": {
        "factor": [(0.7, 0.8), (0.55, 0.7), (0.42, 0.55), (0.32, 0.42), (0.22, 0.32)],
    },
    # IR fixed-pattern noise (noise.stripe_noise): std of the per-column offset.
    "ir_stripe": {
        "sigma": [(0.01, 0.02), (0.02, 0.035), (0.035, 0.05), (0.05, 0.07), (0.07, 0.1)],
    },
}

# Level-independent ranges.
SHARED: dict[str, Range] = {
    "haze_airlight_vi": (0.8, 1.0),  # bright grey-white veil of scattered daylight (real fog saturates)
    # Thermal path radiance: from a dark veil (fog colder than the scene; the IR of the AWFusion fog pairs
    # fades towards black) to a mid-grey (air near the scene's temperature). With the grey alone, the blind
    # estimator learnt "white VIS over a grey-veiled IR" as haze and read real fog over dark IR as
    # overexposure.
    "haze_airlight_ir": (0.05, 0.65),
    "rain_angle": (70.0, 110.0),  # degrees; 90 is vertical rain, wind tilts it
    "rain_ir_opacity": (0.2, 0.35),  # streaks are much fainter in LWIR than in VIS
    "blur_aspect": (0.4, 1.0),  # minor/major sigma of anisotropic defocus
    "motion_angle": (0.0, 180.0),
    "ir_noise_ratio": (0.5, 0.8),  # thermal read noise relative to the VIS sigma at the same level
}


def level_range(degradation: str, param: str, level: int) -> Range:
    """The ``(low, high)`` range of ``param`` of ``degradation`` at ``level`` (1..5)."""
    if not 1 <= level <= 5:
        raise ValueError(f"severity level must be 1..5, got {level}")
    return LEVELS[degradation][param][level - 1]


def sample(rng: random.Random, degradation: str, param: str, level: int) -> float:
    """Draw ``param`` uniformly from its range at ``level``."""
    low, high = level_range(degradation, param, level)
    return rng.uniform(low, high)


def sample_shared(rng: random.Random, name: str) -> float:
    low, high = SHARED[name]
    return rng.uniform(low, high)
