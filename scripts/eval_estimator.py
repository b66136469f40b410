"""How well the blind degradation estimator reads the degradations of pairs it has never seen.

Every clean eval pair (MSRS, RoadScene, TNO, LLVIP, M3FD) is degraded by every recipe at levels 1, 3 and 5
(same plans and seed as ``scripts/eval_fusion.py``) and also judged clean. For each degradation type:
how often the estimator says it is present when it is (recall) and when it is not (false alarms), and the
mean absolute error of its level where present. Then what it sees in the real degraded pairs::

    python scripts/eval_estimator.py --estimator checkpoints/degradation_estimator
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from allinone.models.degradation_estimator import DegradationEstimator, expected_level  # noqa: E402
from degradations.depth import DepthEstimator  # noqa: E402
from degradations.labels import DEGRADATION_TYPES, levels_from_vector  # noqa: E402
from degradations.recipes import RECIPES  # noqa: E402
from script_args import load_model, model_folder, positive_int  # noqa: E402
from eval_fusion import (CLEAN_SUBSETS, DEFAULT_DATA, DEFAULT_MAX_SIDE, REAL_DEGRADED, degrade, load_subset,  # noqa: E402
                         markdown_table)

LEVELS = (1, 3, 5)
# Ways of pooling the crops' haze probabilities into one level (the estimator uses "top row", see
# FAR_FIELD_DEGRADATIONS); each maps (per-crop probabilities (crops, levels), top-row mask) to a level.
HAZE_POOLINGS = {
    "all crops": lambda probs, top: expected_level(probs.mean(dim=0)),
    "top row": lambda probs, top: expected_level(probs[top].mean(dim=0)),
    "most veiled crop": lambda probs, top: expected_level(probs).max(),
}


def score(cases: list[tuple[dict[str, int], dict[str, int]]]) -> list[dict]:
    """One row per degradation type from (true levels, estimated levels) cases."""
    rows = []
    for name in DEGRADATION_TYPES:
        present = [(t[name], e.get(name, 0)) for t, e in cases if name in t]
        absent = [e.get(name, 0) for t, e in cases if name not in t]
        rows.append({
            "degradation": name,
            "cases with it": len(present),
            "recall": f"{np.mean([e > 0 for _, e in present]):.2f}" if present else "-",
            "level error where present": f"{np.mean([abs(t - e) for t, e in present]):.2f}" if present else "-",
            "false alarms": f"{np.mean([e > 0 for e in absent]):.2f}" if absent else "-",
        })
    return rows


def haze_pooling_rows(cases: list[tuple[int, torch.Tensor, torch.Tensor]]) -> list[dict]:
    """One row per way of pooling the crops, from cases (true haze level, per-crop haze probabilities,
    top-row mask)."""
    rows = []
    for name, pool in HAZE_POOLINGS.items():
        judged = [(truth, round(float(pool(probs, top)))) for truth, probs, top in cases]
        present = [(t, e) for t, e in judged if t]
        rows.append({"haze judged on": name, "recall": f"{np.mean([e > 0 for _, e in present]):.2f}",
                     "level error where present": f"{np.mean([abs(t - e) for t, e in present]):.2f}",
                     "false alarms": f"{np.mean([e > 0 for t, e in judged if not t]):.2f}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estimator", type=model_folder, required=True,
                        help="folder written by DegradationEstimator.save_pretrained")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (subset folders)")
    parser.add_argument("--pairs-per-subset", type=positive_int, default=None,
                        help="first N pairs of each subset (default all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic degradation plans")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    estimator = load_model(parser, DegradationEstimator, args.estimator, "--estimator")
    depth_estimator = DepthEstimator.load(None)
    samples = [s for subset in CLEAN_SUBSETS
               for s in load_subset(args.data / subset, args.pairs_per_subset, DEFAULT_MAX_SIDE)]
    cases, haze_cases = [], []
    haze = estimator.config.degradation_types.index("haze")

    def judge(truth: dict[str, int], ir: torch.Tensor, vi: torch.Tensor) -> None:
        per_crop, top_row = estimator.crop_probabilities(ir, vi)  # one pass serves both tables
        cases.append((truth, levels_from_vector(estimator.pool_crops(per_crop, top_row)[0])))
        haze_cases.append((truth.get("haze", 0), per_crop[:, 0, haze], top_row))

    with torch.inference_mode():
        for sample in tqdm(samples, desc="pairs", unit="pair", file=sys.stderr):
            depth = None
            judge({}, sample.ir, sample.vi)
            for recipe in RECIPES:
                for level in LEVELS:
                    def depth_of() -> torch.Tensor:
                        nonlocal depth
                        depth = depth_estimator(sample.vi) if depth is None else depth
                        return depth
                    p, degraded = degrade(sample, recipe, level, args.seed, depth_of)
                    judge(p.levels, degraded.ir, degraded.vi)
        real = []
        for subset, told in REAL_DEGRADED.items():
            for sample in load_subset(args.data / subset, None, DEFAULT_MAX_SIDE):
                seen = estimator.estimate_levels(sample.ir, sample.vi)
                real.append({"pair": f"{subset}/{sample.name}", "degradation shown": ", ".join(told),
                             "estimated": ", ".join(f"{k}:{v}" for k, v in seen.items()) or "clean"})
    print(f"# Degradation estimator {args.estimator}\n")
    print(f"{len(samples)} clean eval pairs, each clean and under every recipe at levels {', '.join(map(str, LEVELS))} "
          f"({len(cases)} cases; depth: {depth_estimator.source}; seed {args.seed})\n")
    print(markdown_table(score(cases), ["degradation", "cases with it", "recall", "level error where present",
                                        "false alarms"]))
    clean_right = np.mean([not e for t, e in cases if not t])
    print(f"\nclean pairs judged clean: {clean_right:.2f}\n")
    print("## Pooling the crops for haze (the same cases)\n")
    print(markdown_table(haze_pooling_rows(haze_cases), ["haze judged on", "recall", "level error where present",
                                                         "false alarms"]))
    print()
    print("## Real degraded pairs\n")
    print(markdown_table(real, ["pair", "degradation shown", "estimated"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
