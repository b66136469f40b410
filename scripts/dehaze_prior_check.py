"""How far the dark channel prior alone restores hazy VIS images, next to the fusion model.

PSNR_ref / SSIM_ref (luma against the clean VIS, as in ``scripts/eval_fusion.py``) of: the hazy VIS as
it is, the VIS dehazed by ``allinone.models.dark_channel.dark_channel_dehaze``, the model's output
(unconditioned, and conditioned on the haze level), and the model fed the dehazed VIS. On the real AWFusion
haze pairs (conditioned on haze:5, the level whose ranges were calibrated to their transmission) and on the
synthetic ``haze`` recipe of 10 clean pairs (MSRS, RoadScene) at levels 3 and 5. A second table says how dense
each set's haze is (``haze_density``), the numbers the haze levels were calibrated with::

    python scripts/dehaze_prior_check.py --checkpoint checkpoints/fusion_cnn
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from allinone.metrics import psnr_reference, ssim_reference  # noqa: E402
from allinone.models.dark_channel import dark_channel_dehaze  # noqa: E402
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from degradations.depth import heuristic_depth  # noqa: E402
from degradations.io import to_uint8  # noqa: E402
from script_args import load_model, model_folder  # noqa: E402
from eval_fusion import (DEFAULT_DATA, DEFAULT_MAX_SIDE, Sample, degrade, labels_condition, load_subset,  # noqa: E402
                         markdown_table)


def scores(model: FusionCNN, samples: list[Sample], level: int) -> dict[str, tuple[float, float]]:
    """Mean (PSNR_ref, SSIM_ref) of each way of producing an image from the degraded samples."""
    haze = labels_condition({"haze": level})
    ways = {
        "hazy VIS": lambda s: s.vi,
        "dark channel prior on the VIS": lambda s: dark_channel_dehaze(s.vi)[0],
        "ours (unconditioned)": lambda s: model(s.ir, s.vi, None),
        f"ours (haze:{level})": lambda s: model(s.ir, s.vi, haze),
        f"ours (haze:{level}) fed the dehazed VIS": lambda s: model(s.ir, dark_channel_dehaze(s.vi)[0], haze),
    }
    out = {}
    for name, produce in ways.items():
        pairs = [(to_uint8(produce(s)), to_uint8(s.clean_vi)) for s in samples]
        out[name] = (float(np.mean([psnr_reference(x, r) for x, r in pairs])),
                     float(np.mean([ssim_reference(x, r) for x, r in pairs])))
    return out


def haze_density(sample: Sample) -> tuple[float, float, float]:
    """(median VIS transmission, its 90th percentile, IR standard deviation over the clean IR's) of one
    hazy sample.

    The transmission inverts the scattering model ``I = J t + A (1 - t)`` per pixel on the VIS mean over
    the channels, with the airlight A the 99.5th percentile of the hazy image, over the pixels whose clean
    value lies at least 0.15 below A (elsewhere t is ill-conditioned). The median says how dense the haze
    is; the 90th percentile how clear the nearest part of the scene stays (near 1 when fog leaves the
    foreground clear, as in the AWFusion pairs).
    """
    hazy, clean = sample.vi.mean(dim=1).flatten().numpy(), sample.clean_vi.mean(dim=1).flatten().numpy()
    airlight = np.percentile(hazy, 99.5)
    usable = airlight - clean >= 0.15
    transmission = np.clip((airlight - hazy[usable]) / (airlight - clean[usable]), 0.0, 1.0)
    return (float(np.median(transmission)), float(np.percentile(transmission, 90)),
            float(sample.ir.std() / sample.clean_ir.std()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=model_folder, required=True,
                        help="folder with model.safetensors and config.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (subset folders)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model = load_model(parser, FusionCNN, args.checkpoint)

    sets = {"real AWFusion haze (5 pairs)": (5, load_subset(args.data / "degraded_awfusion_haze", None,
                                                            DEFAULT_MAX_SIDE, references=True))}
    clean = (load_subset(args.data / "msrs_test", 6, DEFAULT_MAX_SIDE)
             + load_subset(args.data / "roadscene", 4, DEFAULT_MAX_SIDE))
    for level in (3, 5):
        sets[f"synthetic haze, level {level} (10 pairs)"] = (level, [
            degrade(s, "haze", level, 0, lambda s=s: heuristic_depth(s.vi))[1] for s in clean])
    rows = []
    with torch.inference_mode():
        for set_name, (level, samples) in sets.items():
            for way, (psnr, ssim) in scores(model, samples, level).items():
                rows.append({"pairs": set_name, "image": way, "PSNR_ref": f"{psnr:.2f}", "SSIM_ref": f"{ssim:.3f}"})
    print(f"Dark channel prior vs {args.checkpoint}\n")
    print(markdown_table(rows, ["pairs", "image", "PSNR_ref", "SSIM_ref"]))
    density = []
    for set_name, (_, samples) in sets.items():
        transmission, near_field, ir_contrast = np.mean([haze_density(s) for s in samples], axis=0)
        density.append({"pairs": set_name, "median VIS transmission": f"{transmission:.2f}",
                        "90th percentile": f"{near_field:.2f}", "IR std / clean IR std": f"{ir_contrast:.2f}"})
    print("\nHow dense the haze is (means over the pairs)\n")
    print(markdown_table(density, ["pairs", "median VIS transmission", "90th percentile", "IR std / clean IR std"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
