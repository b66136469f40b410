"""The degradation vocabulary shared by the synthesizer, the prompts and the models.

A degradation label vector has one entry per name in ``DEGRADATION_TYPES``; the entry is
``level / MAX_LEVEL`` (0 when the degradation is absent), so a model sees both which
degradations are present and how strong they are.
"""
from __future__ import annotations

from typing import Mapping

import torch

MAX_LEVEL = 5

# Order is part of the checkpoint format: append new names, never reorder.
DEGRADATION_TYPES: tuple[str, ...] = (
    "lowlight",
    "overexposure",
    "haze",
    "rain",
    "blur",
    "lowres",
    "noise",
    "jpeg",
    "low_contrast",
    "ir_stripe",
)


def label_vector(levels: Mapping[str, int]) -> torch.Tensor:
    """Encode ``{"haze": 3, "noise": 1}`` as a float vector of shape ``(len(DEGRADATION_TYPES),)``."""
    vec = torch.zeros(len(DEGRADATION_TYPES))
    for name, level in levels.items():
        if name not in DEGRADATION_TYPES:
            raise ValueError(f"unknown degradation {name!r}; known: {', '.join(DEGRADATION_TYPES)}")
        if not 0 <= int(level) <= MAX_LEVEL:
            raise ValueError(f"level of {name!r} must be 0 (absent) to {MAX_LEVEL}, got {level}")
        vec[DEGRADATION_TYPES.index(name)] = int(level) / MAX_LEVEL
    return vec


def levels_from_vector(vector: torch.Tensor) -> dict[str, int]:
    """The inverse of :func:`label_vector` for an estimated vector (L,): each entry rounded to the nearest
    level, the degradations at level 0 left out (so a clean estimate is ``{}``)."""
    if vector.shape != (len(DEGRADATION_TYPES),):
        raise ValueError(f"expected a vector of {len(DEGRADATION_TYPES)} entries, got shape {tuple(vector.shape)}")
    levels = (vector.clamp(0.0, 1.0) * MAX_LEVEL).round().int().tolist()
    return {name: level for name, level in zip(DEGRADATION_TYPES, levels) if level > 0}


def parse_degradation_spec(spec: str) -> dict[str, int]:
    """Parse the CLI form ``"haze:3,lowlight:2"`` into ``{"haze": 3, "lowlight": 2}``.

    Levels are 1..MAX_LEVEL: a degradation at level 0 is absent, so naming it is a mistake, as is naming
    one twice.
    """
    levels: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, colon, level = (part.strip() for part in item.partition(":"))
        if not colon or not level.isdigit():
            raise ValueError(f"{item!r} is not NAME:LEVEL with a whole-number level 1..{MAX_LEVEL} "
                             f"(e.g. haze:3,lowlight:2)")
        if name in levels:
            raise ValueError(f"{name!r} is given twice in {spec!r}")
        if not 1 <= int(level) <= MAX_LEVEL:
            raise ValueError(f"level of {name!r} must be in 1..{MAX_LEVEL}, got {level}")
        levels[name] = int(level)
    label_vector(levels)  # validates the names
    return levels
