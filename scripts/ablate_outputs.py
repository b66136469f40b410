"""Which part of the fusion model's output helps or costs each metric: score it with one part switched off at a time.

Usage:
    python scripts/ablate_outputs.py --checkpoint checkpoints/fusion_cnn [--recipe night] [--level 3]
        [--seed 0] [--parts detail curve gain denoise dehaze] [--data ../shared/data/eval]
        [--pairs-per-subset N] [--threads 2]

The clean pairs of scripts/eval_fusion.py are degraded by --recipe at --level with the same seeded plans
(``--recipe clean`` keeps them clean). The model, told the true labels, fuses each pair as it is and then
with each of --parts switched off; the unconditioned output is a reference row. VIF, Qabf, SSIM and MI are
scored against the CLEAN sources, as in eval_fusion's section b, and printed as the mean over the pairs.

The parts (see allinone/models/fusion_cnn.py):
- detail: the full-resolution luma detail (zeroed);
- curve: the light-enhancement curve (alpha = 0, the identity);
- gain: the luma gain (k = 1);
- denoise, dehaze: the denoising and dehazing blends (amount 0); only for a model that has them.
A part that helps every metric should not be switched off; one whose removal raises a metric shows where
the training objective and that metric disagree.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see eval_fusion.py

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_fusion import (  # noqa: E402
    CLEAN_SUBSETS, DEFAULT_DATA, DEFAULT_MAX_SIDE, DEGRADED_METRICS, SYNTHETIC_RECIPES, Sample, Scorer, degrade,
    labels_condition, load_subset, markdown_table, mean_rows,
)
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from degradations.depth import DepthEstimator  # noqa: E402

PARTS = ("detail", "curve", "gain", "denoise", "dehaze")
# A blend logit this low gives sigmoid = 2e-22: the blend takes nothing.
OFF_LOGIT = -50.0


def _zero_channel(channel: int):
    def hook(module, inputs, output):
        output = output.clone()
        output[:, channel] = 0.0
        return output
    return hook


@contextlib.contextmanager
def switched_off(model: FusionCNN, part: str) -> Iterator[None]:
    """Within the block, ``model`` runs with ``part`` (one of PARTS) switched off, through a forward hook."""
    if part == "detail":
        head, hook = model.detail_head, lambda module, inputs, output: torch.zeros_like(output)
    elif part in ("curve", "gain"):  # smooth_head channel 0: curve alpha (tanh 0 = 0); 1: luma gain logit
        head, hook = model.smooth_head, _zero_channel(0 if part == "curve" else 1)
    elif part in ("denoise", "dehaze"):
        head = model.denoise_head if part == "denoise" else model.dehaze_head
        if head is None:
            raise ValueError(f"this model has no {part} blend")
        hook = lambda module, inputs, output: torch.full_like(output, OFF_LOGIT)  # noqa: E731
    else:
        raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def model_parts(model: FusionCNN) -> list[str]:
    """The PARTS ``model`` has: every one but a blend it was built without."""
    missing = {"denoise": model.denoise_head is None, "dehaze": model.dehaze_head is None}
    return [part for part in PARTS if not missing.get(part, False)]


def ablate(model: FusionCNN, samples: Sequence[Sample], recipe: str, level: int, seed: int,
           parts: Sequence[str], depth: DepthEstimator) -> list[dict]:
    """Mean VIF, Qabf, SSIM and MI against the clean sources, one row per output variant."""
    scorer = Scorer(None)
    for sample in tqdm(samples, desc=f"{recipe} L{level}", unit="pair"):
        if recipe == "clean":
            levels, degraded = {}, sample
        else:
            p, degraded = degrade(sample, recipe, level, seed, lambda: depth(sample.vi))
            levels = p.levels
        sources = scorer.sources(sample.ir, sample.vi)
        condition = labels_condition(levels)
        scorer.queue(model(degraded.ir, degraded.vi, condition), sources, method="ours_cond")
        for part in parts:
            with switched_off(model, part):
                scorer.queue(model(degraded.ir, degraded.vi, condition), sources, method=f"ours_cond without {part}")
        scorer.queue(model(degraded.ir, degraded.vi, None), sources, method="ours_uncond")
    return mean_rows(scorer.collect(DEGRADED_METRICS), DEGRADED_METRICS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="folder with model.safetensors and config.json")
    parser.add_argument("--recipe", default="night", choices=("clean", *SYNTHETIC_RECIPES),
                        help="synthetic recipe of eval_fusion, or clean (default night)")
    parser.add_argument("--level", type=int, default=3, help="severity level (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradation plans (as eval_fusion)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=None,
                        help="parts to switch off one at a time (default every part the model has)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (subset folders)")
    parser.add_argument("--pairs-per-subset", type=int, default=None, help="first N pairs of each subset")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = FusionCNN.from_pretrained(args.checkpoint)
    parts = args.parts or model_parts(model)
    samples = [sample for subset in CLEAN_SUBSETS if (args.data / subset).is_dir()
               for sample in load_subset(args.data / subset, args.pairs_per_subset, DEFAULT_MAX_SIDE)]
    if not samples:
        raise SystemExit(f"error: no pairs under {args.data}")
    with torch.inference_mode():
        rows = ablate(model, samples, args.recipe, args.level, args.seed, parts, DepthEstimator.load(None))
    title = "clean pairs" if args.recipe == "clean" else f"{args.recipe}, level {args.level}"
    print(f"\n### {args.checkpoint}: {title}, {len(samples)} pairs, scored against the clean sources\n")
    print(markdown_table(rows, ["method", *DEGRADED_METRICS]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
