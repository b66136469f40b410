"""How MI, VIF, Qabf and SSIM of a fused image respond to changes of its pixel values that the eye barely sees.

Usage:
    python scripts/mi_sensitivity.py [--noise 0.5 1 2 4] [--recipes blur lowres] [--checkpoint DIR]
        [--snap 1 2 4] [--data ../shared/data/eval] [--pairs-per-subset N] [--seed 0] [--threads 2]

The max-select fusion of each clean pair of scripts/eval_fusion.py (the baseline that leads on MI in five of
its six degraded recipes) is changed slightly and scored against the clean sources, as eval_fusion scores the
synthetic recipes:
- Gaussian noise of --noise standard deviations, in 8-bit grey levels (--seed, drawn afresh for each pair);
- a 3x3 box blur;
- a gain of 1.02 on every channel (a monotonic tone change: MI counts it only where two grey levels merge);
- for each of --recipes, the max-select of the pair degraded by that recipe at level 3 (eval_fusion's plans);
- with --checkpoint, that model's output on the clean pair (told clean) and on each degraded pair (told its
  degradation);
- with --checkpoint and --snap, each of those outputs with every pixel whose luma lies within T grey levels of
  the max-select's (of the same pair, clean or degraded) replaced by the max-select pixel, for each T: the
  pixel-wise path from our output to max-select, which shows what copying source pixels unchanged gains on MI
  and costs on SSIM. A measurement only: the shipped pipeline does not snap.
Each row gives the mean metrics and RMSE, the root-mean-square difference in grey levels of the row's luma
from the unchanged max-select's. MI counts how often an output grey level recurs with the same source grey
level, so a change of a grey level here and there costs it much more than it costs the other metrics; this is
why a restoring output, whose corrections are never exact, trails max-select on MI (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see eval_fusion.py

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_fusion import (  # noqa: E402
    CLEAN_SUBSETS, DEFAULT_DATA, DEFAULT_MAX_SIDE, DEGRADED_METRICS, SYNTHETIC_RECIPES, Sample, Scorer, degrade,
    labels_condition, load_subset, markdown_table, mean_rows,
)
from allinone.baselines import max_fusion  # noqa: E402
from allinone.metrics import to_luma  # noqa: E402
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from degradations.depth import DepthEstimator  # noqa: E402
from degradations.io import to_uint8  # noqa: E402
from script_args import load_model, model_folder, positive_int  # noqa: E402

LEVEL = 3
GAIN = 1.02


def add_noise(image: torch.Tensor, sigma_levels: float, generator: torch.Generator) -> torch.Tensor:
    """``image`` (B, C, H, W) in [0, 1] plus Gaussian noise of ``sigma_levels`` 8-bit grey levels, clamped."""
    noise = torch.randn(image.shape, generator=generator) * (sigma_levels / 255.0)
    return (image + noise).clamp(0.0, 1.0)


def box_blur3(image: torch.Tensor) -> torch.Tensor:
    """3x3 mean of (B, C, H, W), edges reflected."""
    return F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), 3, stride=1)


def luma8(image: torch.Tensor) -> np.ndarray:
    """The 8-bit luma of an image, as the metrics see it, in float64."""
    return to_luma(to_uint8(image)).astype(np.float64)


def luma_rmse(image: torch.Tensor, reference_luma: np.ndarray) -> float:
    """Root-mean-square difference, in grey levels, of an image's 8-bit luma from ``reference_luma`` (:func:`luma8`)."""
    return float(np.sqrt(np.mean((luma8(image) - reference_luma) ** 2)))


def snapped(image: torch.Tensor, target: torch.Tensor, within_levels: float) -> torch.Tensor:
    """``image`` (1, C, H, W) with each pixel whose 8-bit luma lies within ``within_levels`` grey levels of
    ``target``'s replaced by the ``target`` pixel."""
    close = np.abs(luma8(image) - luma8(target)) <= within_levels
    return torch.where(torch.from_numpy(close), target, image)


def variants(sample: Sample, noise: Sequence[float], recipes: Sequence[str], model: FusionCNN | None, seed: int,
             depth: Callable[[torch.Tensor], torch.Tensor], snap: Sequence[float] = ()) -> dict[str, torch.Tensor]:
    """The rows' images for one clean pair, by row name."""
    fused = max_fusion(sample.ir, sample.vi)
    generator = torch.Generator().manual_seed(seed)
    out = {"max-select": fused}
    out.update({f"+ noise, sigma {sigma:g} grey levels": add_noise(fused, sigma, generator) for sigma in noise})
    out["3x3 box blur"] = box_blur3(fused)
    out[f"x {GAIN:g} gain"] = (fused * GAIN).clamp(0.0, 1.0)

    def add_ours(name: str, ours: torch.Tensor, selected: torch.Tensor) -> None:
        out[name] = ours
        out.update({f"{name}, max-select within {t:g}": snapped(ours, selected, t) for t in snap})

    if model is not None:
        add_ours("ours on the clean pair, told clean", model(sample.ir, sample.vi, labels_condition({})), fused)
    for recipe in recipes:
        p, degraded = degrade(sample, recipe, LEVEL, seed, lambda: depth(sample.vi))
        selected = out[f"max-select of the {recipe} L{LEVEL} pair"] = max_fusion(degraded.ir, degraded.vi)
        if model is not None:
            add_ours(f"ours on the {recipe} L{LEVEL} pair, told {recipe}",
                     model(degraded.ir, degraded.vi, labels_condition(p.levels)), selected)
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The checked arguments, with the loaded ``model`` (None without --checkpoint)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0],
                        help="noise standard deviations in grey levels (default 0.5 1 2 4)")
    parser.add_argument("--recipes", nargs="*", choices=SYNTHETIC_RECIPES, default=["blur", "lowres"],
                        help="synthetic recipes whose max-select rows to add (default blur lowres)")
    parser.add_argument("--checkpoint", type=model_folder, default=None,
                        help="a fusion model whose output on each recipe's pairs to add (default none)")
    parser.add_argument("--snap", type=float, nargs="*", default=[],
                        help="with --checkpoint: grey-level thresholds T of the rows that replace our output by "
                             "max-select wherever their lumas differ by at most T (default none)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (subset folders)")
    parser.add_argument("--pairs-per-subset", type=positive_int, default=None, help="first N pairs of each subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and degradation plans")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    if any(sigma <= 0 for sigma in args.noise):
        parser.error("--noise values must be > 0")
    if args.snap and args.checkpoint is None:
        parser.error("--snap needs --checkpoint")
    if any(t < 0 for t in args.snap):
        parser.error("--snap values must be >= 0")
    args.model = load_model(parser, FusionCNN, args.checkpoint) if args.checkpoint is not None else None
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model
    samples = [sample for subset in CLEAN_SUBSETS if (args.data / subset).is_dir()
               for sample in load_subset(args.data / subset, args.pairs_per_subset, DEFAULT_MAX_SIDE)]
    if not samples:
        raise SystemExit(f"error: no pairs under {args.data}")
    depth = DepthEstimator.load(None) if args.recipes else None
    scorer, rmse = Scorer(None), {}
    with torch.inference_mode():
        for sample in tqdm(samples, desc="pairs", unit="pair"):
            sources = scorer.sources(sample.ir, sample.vi)
            images = variants(sample, args.noise, args.recipes, model, args.seed, depth, args.snap)
            reference_luma = luma8(images["max-select"])
            for name, image in images.items():
                scorer.queue(image, sources, method=name)
                rmse.setdefault(name, []).append(luma_rmse(image, reference_luma))
    rows = mean_rows(scorer.collect(DEGRADED_METRICS), DEGRADED_METRICS)
    for row in rows:
        row["RMSE"] = float(np.mean(rmse[row["method"]]))
    print(f"\n### {len(samples)} clean pairs: changes of the max-select fusion, scored against the clean sources\n")
    print(markdown_table(rows, ["method", "MI", "VIF", "Qabf", "SSIM", "RMSE"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
