"""Where the fusion SSIM is won or lost: its mean split by how flat each source is under the 7x7 window.

The fusion SSIM (``allinone.metrics.ssim_fusion``, CDDFuse's convention) has negligible stabilising
constants, so a window in which a source is flat scores ~0 against that source unless the fused window
is flat too. This script splits ``SSIM(F, IR)`` and ``SSIM(F, VIS)``, averaged over all 31 clean pairs,
into the contributions of windows where that source's local variance (8-bit levels squared) is below
0.5 ("flat"), below 4 ("nearly flat", under 2 levels of deviation) or above ("textured")::

    python scripts/ssim_breakdown.py --checkpoint checkpoints/fusion_cnn

The contributions of one method add up to its clean SSIM in ``scripts/eval_fusion.py``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.ndimage import uniform_filter  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

from allinone.metrics import to_luma  # noqa: E402
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from degradations.io import to_uint8  # noqa: E402
from script_args import load_model, model_folder, positive_int  # noqa: E402
from eval_fusion import (BASELINES, CLEAN_SUBSETS, DEFAULT_DATA, DEFAULT_MAX_SIDE, OURS,  # noqa: E402
                         labels_condition, load_subset, markdown_table)

BANDS = (("flat", -np.inf, 0.5), ("nearly flat", 0.5, 4.0), ("textured", 4.0, np.inf))
BAND_NAMES = tuple(name for name, *_ in BANDS)


def band_masks(source: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of the SSIM map (border dropped) by the source's local variance under the window."""
    variance = uniform_filter(source * source, 7) - uniform_filter(source, 7) ** 2
    # scikit-image averages the map without its 3-pixel border (where the window leaves the image).
    variance = variance[3:-3, 3:-3]  # may dip just below 0 by rounding where the source is constant
    return {name: (variance >= low) & (variance < high) for name, low, high in BANDS}


def contributions(fused: np.ndarray, source: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Each band's share of the mean SSIM map of ``fused`` against ``source`` (2-D luma arrays)."""
    _, ssim_map = structural_similarity(fused, source, win_size=7, data_range=2.0, gaussian_weights=False,
                                        use_sample_covariance=True, full=True)
    ssim_map = ssim_map[3:-3, 3:-3]
    return {name: float(ssim_map[mask].sum() / ssim_map.size) for name, mask in masks.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=model_folder, required=True,
                        help="folder with model.safetensors and config.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (subset folders)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(parser, FusionCNN, args.checkpoint)
    samples = [s for subset in CLEAN_SUBSETS for s in load_subset(args.data / subset, None, DEFAULT_MAX_SIDE)]
    totals: dict[tuple[str, str], dict[str, float]] = {}
    with torch.inference_mode():
        for sample in samples:
            outputs = {OURS: model(sample.ir, sample.vi, labels_condition({}))}
            outputs.update((name, fuse(sample.ir, sample.vi)) for name, fuse in BASELINES.items())
            sources = {"IR": to_luma(to_uint8(sample.ir)), "VIS": to_luma(to_uint8(sample.vi))}
            masks = {name: band_masks(source) for name, source in sources.items()}
            for source_name, source_masks in masks.items():
                row = totals.setdefault(("(area)", source_name), dict.fromkeys(BAND_NAMES, 0.0))
                for band, mask in source_masks.items():
                    row[band] += float(mask.mean()) / len(samples)
            for method, fused in outputs.items():
                luma = to_luma(to_uint8(fused))
                for source_name, source in sources.items():
                    row = totals.setdefault((method, source_name), dict.fromkeys(BAND_NAMES, 0.0))
                    for band, value in contributions(luma, source, masks[source_name]).items():
                        row[band] += value / len(samples)
    rows = [{"method": method, "source": source, **{band: f"{value:.4f}" for band, value in row.items()},
             "sum": f"{sum(row.values()):.4f}"} for (method, source), row in totals.items()]
    print(f"SSIM contributions by source flatness, mean over {len(samples)} clean pairs "
          "(the (area) rows: fraction of the map in each band)\n")
    print(markdown_table(rows, ["method", "source", *BAND_NAMES, "sum"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
