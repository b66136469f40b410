"""Text instructions for each degradation, as MMAIF pairs degraded inputs with prompts.

A benchmark item or training triplet draws one instruction per degradation it contains; a composite
joins them in the order the degradations were applied. Varied wording keeps a text-conditioned model
from keying on one phrase.
"""
from __future__ import annotations

import random
from typing import Sequence

PROMPTS: dict[str, tuple[str, ...]] = {
    "lowlight": (
        "brighten the dark street but keep the thermal targets",
        "enhance the low-light visible image and fuse it with the infrared",
        "lift the shadows of this night scene without amplifying noise",
        "restore a well-exposed image from the underexposed visible frame",
        "make the night image brighter while keeping pedestrians highlighted",
        "correct the low illumination and suppress the dark noise",
        "illuminate the dark regions and preserve the heat signatures",
        "recover details hidden in the darkness of the visible image",
        "improve visibility at night using the thermal image",
        "raise the exposure of the dim scene and keep natural colours",
        "this was shot at night, brighten it and fuse with the infrared",
        "enhance the poorly lit scene for clear night-time perception",
    ),
    "overexposure": (
        "fix the overexposed visible image",
        "recover the blown-out highlights",
        "reduce the glare and restore detail in bright areas",
        "correct the overexposure and keep the thermal targets",
        "tone down the saturated regions of the visible frame",
        "restore the washed-out image to a normal exposure",
        "remove the strong glare from headlights or sunlight",
        "bring back texture lost to overexposure",
        "balance the exposure of this too-bright scene",
        "lower the brightness where the sensor clipped",
    ),
    "haze": (
        "remove the haze",
        "dehaze the visible image and fuse it with the infrared",
        "clear the fog and restore the distant objects",
        "remove the haze veil and recover natural contrast",
        "see through the mist using the thermal image",
        "restore a clear scene from the hazy picture",
        "eliminate the atmospheric haze and keep the colours true",
        "the scene is foggy, make the far buildings visible again",
        "defog the image and highlight the warm targets",
        "lift the grey veil of haze from the distant road",
        "remove the smog and sharpen the faraway details",
    ),
    "rain": (
        "remove the rain streaks",
        "derain the visible image and fuse it with the infrared",
        "clean the rain from the scene",
        "erase the falling rain and keep the scene details",
        "remove the rain and highlight the pedestrians",
        "the image is rainy, restore a clear view",
        "get rid of the rain streaks over the road",
        "suppress the rain and preserve the thermal targets",
        "restore the rainy scene to a dry-looking clear image",
        "wipe out the streaks caused by heavy rain",
    ),
    "blur": (
        "deblur the images",
        "sharpen the blurry picture",
        "remove the motion blur caused by camera shake",
        "restore the out-of-focus image",
        "recover sharp edges from the blurred frames",
        "fix the blur and fuse the infrared and visible images",
        "make the blurry scene crisp again",
        "undo the defocus and keep the thermal targets sharp",
        "remove the smearing from the moving camera",
        "restore fine details lost to blur",
    ),
    "lowres": (
        "super-resolve the low-resolution images",
        "increase the resolution and restore fine details",
        "upscale the images and sharpen the edges",
        "recover high-frequency detail from the low-resolution input",
        "enhance the resolution of the infrared and visible images",
        "the images are pixelated, restore a high-resolution fusion",
        "restore the detail lost to downsampling",
        "make the low-resolution thermal image sharper",
        "reconstruct a detailed image from the small inputs",
        "improve the resolution while keeping the targets clear",
    ),
    "noise": (
        "denoise the images",
        "remove the sensor noise",
        "clean up the grainy image and fuse it with the infrared",
        "suppress the noise and keep the edges",
        "remove the speckles and preserve fine textures",
        "the picture is noisy, restore a clean fusion",
        "reduce the grain without smearing the details",
        "filter out the random noise in both images",
        "denoise the visible image and keep the thermal targets",
        "get rid of the noise while keeping the scene sharp",
    ),
    "jpeg": (
        "remove the compression artifacts",
        "fix the blocky JPEG artifacts",
        "restore the heavily compressed images",
        "remove the ringing and blocking from compression",
        "clean the compression noise and fuse the images",
        "undo the JPEG degradation",
        "smooth out the compression blocks while keeping edges",
        "restore quality lost to low-bitrate compression",
        "repair the artifacts from aggressive image compression",
        "reduce the blockiness of the compressed frames",
    ),
    "low_contrast": (
        "enhance the contrast",
        "restore the faded, low-contrast images",
        "increase the contrast and make the targets stand out",
        "the scene looks flat, boost its contrast",
        "stretch the contrast of the dull images",
        "recover contrast lost to thermal crossover",
        "make the washed-out scene vivid again",
        "improve the contrast of both the infrared and visible images",
        "restore the dynamic range of the flat picture",
        "sharpen the separation between objects and background",
    ),
    "ir_stripe": (
        "remove the stripe noise from the infrared image",
        "correct the fixed-pattern noise of the thermal camera",
        "remove the vertical stripes in the infrared",
        "destripe the thermal image and fuse it",
        "clean the column noise from the infrared sensor",
        "fix the non-uniformity of the infrared image",
        "remove the striping artifacts and keep the heat targets",
        "the infrared has vertical lines, remove them",
        "suppress the fixed-pattern noise of the infrared detector",
        "restore a uniform thermal image without stripes",
    ),
}


def draw_prompt(rng: random.Random, degradations: Sequence[str]) -> str:
    """One instruction per degradation, joined in application order; '' when there is none."""
    parts = [rng.choice(PROMPTS[name]) for name in degradations]
    if not parts:
        return ""
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + ", and " + parts[-1]
    return text[0].upper() + text[1:]
