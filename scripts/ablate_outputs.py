"""Which part of the fusion model's output helps or costs each metric: score it with one part switched off at a time.

Usage:
    python scripts/ablate_outputs.py --checkpoint checkpoints/fusion_cnn [--recipe night] [--level 3]
        [--seed 0] [--parts detail curve gain select denoise dehaze] [--from-unconditioned]
        [--data ../shared/data/eval] [--pairs-per-subset N] [--threads 2]

The clean pairs of scripts/eval_fusion.py are degraded by --recipe at --level with the same seeded plans
(``--recipe clean`` keeps them clean). The model, told the true labels, fuses each pair as it is and then
with each of --parts switched off; the unconditioned output is a reference row. VIF, Qabf, SSIM and MI are
scored against the CLEAN sources, as in eval_fusion's section b, and printed as the mean over the pairs.

The parts (see allinone/models/fusion_cnn.py):
- detail: the full-resolution luma detail (zeroed);
- curve: the light-enhancement curve (alpha = 0, the identity);
- gain: the luma gain (k = 1);
- select: the preference between IR and VIS in the smooth maximum (logit 0; its sharpness stays);
- denoise, dehaze: the denoising and dehazing blends (amount 0); only for a model that has them.
A part that helps every metric should not be switched off; one whose removal raises a metric shows where
the training objective and that metric disagree.

With --from-unconditioned each part is not switched off but taken from the unconditioned pass (for select:
the logit and the sharpness), the rest of the output staying conditioned: a row above ours_cond names the
part through which the condition costs that metric, which is what a failing conditioned-against-unconditioned
check of eval_fusion asks.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see eval_fusion.py

import torch  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_fusion import (  # noqa: E402
    CLEAN_SUBSETS, DEFAULT_DATA, DEFAULT_MAX_SIDE, DEGRADED_METRICS, SYNTHETIC_RECIPES, Sample, Scorer, degrade,
    labels_condition, load_subset, markdown_table, mean_rows,
)
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from degradations.depth import DepthEstimator  # noqa: E402
from degradations.labels import MAX_LEVEL  # noqa: E402
from script_args import load_model, model_folder, positive_int, whole_number  # noqa: E402

PARTS = ("detail", "curve", "gain", "select", "denoise", "dehaze")
# A blend logit this low gives sigmoid = 2e-22: the blend takes nothing.
OFF_LOGIT = -50.0
# The parts read off the smooth head: its channels (see FusionCNN.forward), and those a switched-off part
# zeroes (select keeps its sharpness, channel 3).
SMOOTH_CHANNELS = {"curve": [0], "gain": [1], "select": [2, 3]}
OFF_CHANNELS = {**SMOOTH_CHANNELS, "select": [2]}


def part_head(model: FusionCNN, part: str) -> nn.Module:
    """The head whose output carries ``part``; ValueError for an unknown part or a blend the model lacks."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    if part == "detail":
        return model.detail_head
    if part in SMOOTH_CHANNELS:
        return model.smooth_head
    head = model.denoise_head if part == "denoise" else model.dehaze_head
    if head is None:
        raise ValueError(f"this model has no {part} blend")
    return head


def part_channels(part: str) -> list[int] | slice:
    """The channels of its head's output that carry ``part`` (all of them for a head of its own)."""
    return SMOOTH_CHANNELS.get(part, slice(None))


def switched_off_output(part: str, output: torch.Tensor) -> torch.Tensor:
    """The head output with ``part`` off: no detail, the identity curve (alpha 0), gain 1 (logit 0), no
    preference between the sources in the smooth maximum (logit 0; the sharpness stays), a blend that takes
    nothing."""
    output = output.clone()
    if part in ("denoise", "dehaze"):
        output.fill_(OFF_LOGIT)
    else:
        output[:, OFF_CHANNELS.get(part, slice(None))] = 0.0
    return output


@contextlib.contextmanager
def replaced(model: FusionCNN, part: str, replace: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, the head output carrying ``part`` goes through ``replace`` (a forward hook)."""
    handle = part_head(model, part).register_forward_hook(lambda module, inputs, output: replace(output))
    try:
        yield
    finally:
        handle.remove()


def switched_off(model: FusionCNN, part: str) -> contextlib.AbstractContextManager:
    """Within the block, ``model`` runs with ``part`` (one of PARTS) switched off."""
    return replaced(model, part, lambda output: switched_off_output(part, output))


def taken_from(model: FusionCNN, part: str, other: dict[str, torch.Tensor]) -> contextlib.AbstractContextManager:
    """Within the block, ``part`` comes from ``other``: the head outputs of another pass, by part
    (:func:`captured_heads`), e.g. the unconditioned one."""
    def replace(output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        channels = part_channels(part)
        output[:, channels] = other[part][:, channels]
        return output
    return replaced(model, part, replace)


@contextlib.contextmanager
def captured_heads(model: FusionCNN, parts: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, the output of each part's head is stored in the yielded dict, by part."""
    store: dict[str, torch.Tensor] = {}

    def hook(part: str):
        return lambda module, inputs, output: store.__setitem__(part, output.clone())

    handles = [part_head(model, part).register_forward_hook(hook(part)) for part in parts]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def model_parts(model: FusionCNN) -> list[str]:
    """The PARTS ``model`` has: every one but a blend it was built without."""
    missing = {"denoise": model.denoise_head is None, "dehaze": model.dehaze_head is None}
    return [part for part in PARTS if not missing.get(part, False)]


def ablate(model: FusionCNN, samples: Sequence[Sample], recipe: str, level: int, seed: int,
           parts: Sequence[str], depth: DepthEstimator, from_unconditioned: bool = False) -> list[dict]:
    """Mean VIF, Qabf, SSIM and MI against the clean sources, one row per output variant.

    Each part is switched off in turn, or with ``from_unconditioned`` taken from the unconditioned pass.
    """
    scorer = Scorer(None)
    for sample in tqdm(samples, desc=f"{recipe} L{level}", unit="pair"):
        if recipe == "clean":
            levels, degraded = {}, sample
        else:
            p, degraded = degrade(sample, recipe, level, seed, lambda: depth(sample.vi))
            levels = p.levels
        sources = scorer.sources(sample.ir, sample.vi)
        condition = labels_condition(levels)
        with captured_heads(model, parts if from_unconditioned else []) as unconditioned_heads:
            unconditioned = model(degraded.ir, degraded.vi, None)
        scorer.queue(model(degraded.ir, degraded.vi, condition), sources, method="ours_cond")
        for part in parts:
            if from_unconditioned:
                change, label = taken_from(model, part, unconditioned_heads), f"with unconditioned {part}"
            else:
                change, label = switched_off(model, part), f"without {part}"
            with change:
                scorer.queue(model(degraded.ir, degraded.vi, condition), sources, method=f"ours_cond {label}")
        scorer.queue(unconditioned, sources, method="ours_uncond")
    return mean_rows(scorer.collect(DEGRADED_METRICS), DEGRADED_METRICS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The checked arguments, with the loaded ``model``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=model_folder, required=True,
                        help="folder with model.safetensors and config.json")
    parser.add_argument("--recipe", default="night", choices=("clean", *SYNTHETIC_RECIPES),
                        help="synthetic recipe of eval_fusion, or clean (default night)")
    parser.add_argument("--level", type=whole_number(1, MAX_LEVEL), default=3, help="severity level (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradation plans (as eval_fusion)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=None,
                        help="parts to switch off (or take from the unconditioned pass) one at a time "
                             "(default every part the model has)")
    parser.add_argument("--from-unconditioned", action="store_true",
                        help="take each part from the unconditioned pass instead of switching it off")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (subset folders)")
    parser.add_argument("--pairs-per-subset", type=positive_int, default=None, help="first N pairs of each subset")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    args.model = load_model(parser, FusionCNN, args.checkpoint)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model
    parts = args.parts or model_parts(model)
    samples = [sample for subset in CLEAN_SUBSETS if (args.data / subset).is_dir()
               for sample in load_subset(args.data / subset, args.pairs_per_subset, DEFAULT_MAX_SIDE)]
    if not samples:
        raise SystemExit(f"error: no pairs under {args.data}")
    with torch.inference_mode():
        rows = ablate(model, samples, args.recipe, args.level, args.seed, parts, DepthEstimator.load(None),
                     args.from_unconditioned)
    title = "clean pairs" if args.recipe == "clean" else f"{args.recipe}, level {args.level}"
    print(f"\n### {args.checkpoint}: {title}, {len(samples)} pairs, scored against the clean sources\n")
    print(markdown_table(rows, ["method", *DEGRADED_METRICS]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
