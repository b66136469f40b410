"""Evaluate the fusion model against classic baselines on clean, synthetically degraded and really degraded pairs.

Usage:
    python scripts/eval_fusion.py --checkpoint checkpoints/fusion_cnn [--data ../shared/data/eval]
        [--out docs/results] [--pairs-per-subset N] [--levels 3] [--seed 0] [--max-side 1024]
        [--threads 2] [--workers 2] [--estimator DIR] [--niqe] [--quick] [--strict]
        [--sections clean synthetic real] [--recipes night haze ...]

Three evaluations, each printed as markdown tables and written as CSV files to --out:

a. clean (``clean_pairs.csv``, ``clean_summary.csv``): the real pairs of msrs_test, roadscene, tno, llvip
   and m3fd; every metric of allinone.metrics.METRIC_NAMES for ours (told the pair is clean: all-zero
   labels), ours unconditioned (null embedding), ours_auto (below), and the mean, max and
   Laplacian-pyramid baselines; means over all pairs, per subset and over the MSRS night pairs (names
   ending in N). PASS/FAIL lines for the acceptance criteria follow.
b. synthetic (``synthetic_pairs.csv``, ``synthetic_summary.csv``): every clean pair degraded by the
   recipes night, haze, noise, blur, lowres and mixed at each --levels (plan seeded by
   ``item_seed(--seed, pair name, recipe, level)`` as ``allinone degrade`` does; haze depth from
   ``DepthEstimator.load(None)``). VIF, Qabf, SSIM and MI of each output against the CLEAN sources;
   ours conditioned on the true degradation labels, ours unconditioned, and the baselines fed the
   degraded pair. PASS/FAIL per recipe and metric: conditioned > unconditioned, both > every baseline; each
   line adds the per-pair conditioned - unconditioned difference with its 95% bootstrap interval, which
   tells a real lead or loss from a tie on these pairs (the check itself compares the means).
   With the blind degradation estimator (--estimator, default checkpoints/degradation_estimator) a row
   ``ours_auto`` is ours told the levels the estimator sees (in a, b and c; not part of the checks).
c. real degraded (``real_degraded_pairs.csv``, ``real_degraded_summary.csv``): the AWFusion haze and rain
   pairs scored against their clean gt_ir/gt_vi references, plus PSNR_ref/SSIM_ref of the output's
   luma against the clean VIS; ours conditioned on haze:5 or rain:3, unconditioned, and the baselines.

--sections runs a subset of the three (default all of them; each writes only its own CSV files), --recipes a
subset of the synthetic recipes (a quicker look at one of them; the check count then covers only those).
``checks.csv`` collects every PASS/FAIL line of the sections run, and ``eval_settings.json`` records what decides
the numbers (checkpoint, data, sections, recipes, levels, seed, pairs per subset, max side, NIQE, estimator).

The results folder (--out, default docs/results: a rerun regenerates the repository's own results) holds one
evaluation only. An --out holding the results of another one (other settings, or files without
``eval_settings.json``) is refused unless --overwrite is given; the same evaluation may be rerun into it. Before
writing, every file this script writes is removed from --out (the CSV files of the three sections, checks.csv,
eval_settings.json), so the CSV files of a section not rerun do not outlive the evaluation they came from;
other files are left alone. The settings are recorded last: a run that stops early leaves a folder that a
rerun must --overwrite. Every method's output and every source go
through the same 8-bit conversion (degradations.io.to_uint8) before scoring; the metrics run in --workers
processes.
Frames whose longer side exceeds --max-side are box-downscaled by an integer factor before anything
else (default 1024: LLVIP's 1280x1024 frames are halved); the output names them. --quick (2 pairs per
subset, frames at most 160 px) is a smoke test: its numbers mean nothing. The exit status is 0 unless
--strict is given and a check fails.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that spin while waiting make every torch op wait for a descheduled thread when other
# processes share the cores (here: 5-10x slower forwards); passive waiting costs little on an idle machine.
# Read when torch loads, so it is set before the import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from allinone.baselines import laplacian_pyramid_fusion, max_fusion, mean_fusion  # noqa: E402
from allinone.conditioning import Condition  # noqa: E402
from allinone.metrics import METRIC_NAMES, evaluate_fusion, niqe  # noqa: E402
from allinone.models.degradation_estimator import DegradationEstimator  # noqa: E402
from allinone.models.fusion_cnn import FusionCNN  # noqa: E402
from allinone.pipeline import DEFAULT_ESTIMATOR  # noqa: E402
from degradations.depth import DepthEstimator  # noqa: E402
from degradations.io import ImageReadError, read_json_object, to_uint8, write_bytes_atomic  # noqa: E402
from degradations.labels import MAX_LEVEL, label_vector  # noqa: E402
from degradations.pairs import PairingError, find_pairs, load_pair  # noqa: E402
from degradations.recipes import apply_steps, item_seed, plan  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_args import (load_model, model_folder, non_negative_int, output_folder, positive_int,  # noqa: E402
                         whole_number)  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data")) / "eval"

CLEAN_SUBSETS = ("msrs_test", "roadscene", "tno", "llvip", "m3fd")
NIGHT_SUBSET = "msrs_test"  # MSRS marks its night pairs with a trailing N in the name
SYNTHETIC_RECIPES = ("night", "haze", "noise", "blur", "lowres", "mixed")
# Real degraded subsets and the condition a user would give each: haze:5 is the level whose ranges were
# calibrated to the AWFusion fog (degradations/severity.py); the rain is not calibrated: the middle level.
REAL_DEGRADED = {"degraded_awfusion_haze": {"haze": 5}, "degraded_awfusion_rain": {"rain": 3}}
SECTIONS = ("clean", "synthetic", "real")
# The files each section writes (pairs, summary), then those of every run: what --out may be cleared of.
SECTION_FILES = {"clean": ("clean_pairs.csv", "clean_summary.csv"),
                 "synthetic": ("synthetic_pairs.csv", "synthetic_summary.csv"),
                 "real": ("real_degraded_pairs.csv", "real_degraded_summary.csv")}
CHECKS_FILE, SETTINGS_FILE = "checks.csv", "eval_settings.json"
RESULT_FILES = (*(name for files in SECTION_FILES.values() for name in files), CHECKS_FILE, SETTINGS_FILE)

DEGRADED_METRICS = ("VIF", "Qabf", "SSIM", "MI")
REFERENCE_METRICS = ("PSNR_ref", "SSIM_ref")
CHECKED_METRICS = ("VIF", "Qabf", "SSIM")
MAX_RATIO = 0.97  # ours may trail max fusion by 3% on VIF and Qabf (max fusion is strong on both)
NIGHT_TARGETS = {"VIF": 1.0, "Qabf": 0.62}
BOOTSTRAP_RESAMPLES = 10_000  # resamples of the pairs for the interval of a paired difference

QUICK_PAIRS_PER_SUBSET = 2
QUICK_MAX_SIDE = 160
DEFAULT_MAX_SIDE = 1024

BASELINES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mean": mean_fusion,
    "max": max_fusion,
    "laplacian": laplacian_pyramid_fusion,
}
OURS, OURS_CONDITIONED, OURS_UNCONDITIONED, OURS_AUTO = "ours", "ours_cond", "ours_uncond", "ours_auto"


@dataclass
class Sample:
    """One pair (1, 1, H, W) IR and (1, C, H, W) VIS, with clean references when the pair is degraded."""

    subset: str
    name: str
    ir: torch.Tensor
    vi: torch.Tensor
    clean_ir: torch.Tensor | None = None
    clean_vi: torch.Tensor | None = None


@dataclass
class Check:
    """One acceptance criterion: which evaluation, whether it holds, and the numbers behind it."""

    evaluation: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} [{self.evaluation}] {self.detail}"


# --- data -------------------------------------------------------------------------------------------


def downscale_factor(height: int, width: int, max_side: int | None) -> int:
    """Smallest integer factor that brings the longer side to at most ``max_side`` (1 when None)."""
    return 1 if max_side is None else max(1, math.ceil(max(height, width) / max_side))


def box_downscale(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Mean over ``factor`` x ``factor`` blocks (B, C, H, W) -> (B, C, H // factor, W // factor)."""
    return x if factor == 1 else F.avg_pool2d(x, factor)


def load_subset(folder: Path, limit: int | None, max_side: int | None, references: bool = False,
                downscaled: list[str] | None = None) -> list[Sample]:
    """The first ``limit`` pairs (by name) of ``folder``/ir, vi; with ``references`` also gt_ir, gt_vi.

    IR is resized to the VIS size where they differ. Names of downscaled pairs go to ``downscaled``.
    """
    pairs = find_pairs(folder / "ir", folder / "vi")[:limit]
    clean = {p.name: p for p in find_pairs(folder / "gt_ir", folder / "gt_vi")} if references else {}
    samples = []
    for pair in pairs:
        images = list(load_pair(pair, "resize", None))
        if references:
            images += load_pair(clean[pair.name], "resize", None)
        factor = downscale_factor(*images[1].shape[-2:], max_side)
        if factor > 1 and downscaled is not None:
            downscaled.append(f"{folder.name}/{pair.name} (1/{factor})")
        samples.append(Sample(folder.name, pair.name, *(box_downscale(x, factor) for x in images)))
    return samples


def degrade(sample: Sample, recipe: str, level: int, seed: int, depth: Callable[[], torch.Tensor]):
    """Degrade a clean sample with a recipe; returns (plan, degraded Sample with the clean references)."""
    p = plan(recipe, level, item_seed(seed, sample.name, recipe, level))
    ir, vi = apply_steps(p.steps, sample.ir, sample.vi, depth() if p.needs_depth else None)
    return p, Sample(sample.subset, sample.name, ir, vi, sample.ir, sample.vi)


# --- scoring ----------------------------------------------------------------------------------------


def score_job(job: tuple) -> dict[str, float]:
    """Metrics of one ``(fused, ir, vi, ref or None, with_niqe)`` job of uint8 arrays.

    NIQE is NaN for an image smaller than the two 96x96 blocks it needs.
    """
    fused, ir, vi, ref, with_niqe = job
    scores = evaluate_fusion(fused, ir, vi, ref, compute_niqe=False)
    if with_niqe:
        try:
            scores["NIQE"] = niqe(fused)
        except ValueError:
            scores["NIQE"] = math.nan
    return scores


class Scorer:
    """Collects fused images with their sources, then scores them all, in worker processes if given a pool.

    Each evaluation first runs every method (torch, in this process) and queues the outputs, then scores
    them (numpy, one core per image): the two phases never compete for the cores. Every image, output
    or source, becomes uint8 through the same :func:`degradations.io.to_uint8`.
    """

    def __init__(self, pool: Executor | None) -> None:
        self.pool = pool
        self.jobs: list[tuple] = []
        self.labels: list[dict] = []

    @staticmethod
    def sources(ir: torch.Tensor, vi: torch.Tensor, ref: torch.Tensor | None = None) -> tuple:
        """The uint8 (ir, vi, ref) a fused image is scored against; convert once, queue many times."""
        return to_uint8(ir), to_uint8(vi), None if ref is None else to_uint8(ref)

    def queue(self, fused: torch.Tensor, sources: tuple, with_niqe: bool = False, **labels) -> None:
        self.jobs.append((to_uint8(fused), *sources, with_niqe))
        self.labels.append(labels)

    def collect(self, metrics: Sequence[str]) -> list[dict]:
        """One row per queued image: its labels, then ``metrics``; empties the queue."""
        if self.pool is None:
            results = map(score_job, self.jobs)
        else:
            results = self.pool.map(score_job, self.jobs, chunksize=max(1, len(self.jobs) // 32))
        rows = [{**labels, **{m: scores[m] for m in metrics}} for labels, scores in zip(self.labels, results)]
        self.jobs, self.labels = [], []
        return rows


def labels_condition(levels: Mapping[str, int]) -> Condition:
    """The model condition for one pair with known degradation levels."""
    return Condition(labels=label_vector(levels)[None])


def ours_outputs(model: FusionCNN, ir: torch.Tensor, vi: torch.Tensor, levels: Mapping[str, int],
                 blind: DegradationEstimator | None) -> dict[str, torch.Tensor]:
    """Our model told the true levels, told nothing, and (with an estimator) told what the estimator sees."""
    outputs = {OURS_CONDITIONED: model(ir, vi, labels_condition(levels)), OURS_UNCONDITIONED: model(ir, vi, None)}
    if blind is not None:
        outputs[OURS_AUTO] = model(ir, vi, labels_condition(blind.estimate_levels(ir, vi)))
    return outputs


def mean_rows(rows: Sequence[dict], metrics: Sequence[str], **labels) -> list[dict]:
    """One row per method (in order of appearance): NaN-ignoring means of ``metrics``, the pair count."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    summary = []
    for method in methods:
        chosen = [row for row in rows if row["method"] == method]
        means = {}
        for metric in metrics:
            values = np.array([row[metric] for row in chosen], dtype=np.float64)
            means[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        summary.append({**labels, "method": method, "pairs": len(chosen), **means})
    return summary


def by_method(summary: Iterable[dict]) -> dict[str, dict]:
    return {row["method"]: row for row in summary}


# --- output -----------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Write ``rows`` atomically (temporary file + rename), so a killed run never leaves half a table."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


def write_checks(path: Path, checks: Sequence[Check]) -> None:
    """``checks.csv``: a row per check (evaluation, passed as True/False, detail), as compare_checks.py reads it."""
    write_csv(path, [{"evaluation": c.evaluation, "passed": c.passed, "detail": c.detail} for c in checks],
              ["evaluation", "passed", "detail"])


# --- checks -----------------------------------------------------------------------------------------


def clean_checks(overall: dict[str, dict], night: dict[str, dict]) -> list[Check]:
    """Acceptance criteria on the clean pairs, from the per-method means."""
    checks = []
    ours = overall[OURS]
    for metric in CHECKED_METRICS:
        for baseline in ("mean", "laplacian"):
            value = overall[baseline][metric]
            checks.append(Check("clean", ours[metric] > value,
                                f"{metric} ours > {baseline}: {ours[metric]:.4f} vs {value:.4f}"))
    value = overall["max"]["SSIM"]
    checks.append(Check("clean", ours["SSIM"] > value, f"SSIM ours > max: {ours['SSIM']:.4f} vs {value:.4f}"))
    for metric in ("VIF", "Qabf"):
        value = overall["max"][metric]
        checks.append(Check("clean", ours[metric] >= MAX_RATIO * value,
                            f"{metric} ours >= {MAX_RATIO} x max: {ours[metric]:.4f} vs {MAX_RATIO} x {value:.4f} "
                            f"= {MAX_RATIO * value:.4f}"))
    if not night:
        return checks + [Check("clean MSRS night", False, "no MSRS night pair was evaluated")]
    for metric, target in NIGHT_TARGETS.items():
        value = night[OURS][metric]
        gap = "" if value >= target else f", short by {target - value:.4f}"
        checks.append(Check("clean MSRS night", value >= target, f"{metric} ours >= {target}: {value:.4f}{gap}"))
    return checks


def paired_difference(rows: Sequence[dict], metric: str, first: str, second: str,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> str:
    """``first - second`` on ``metric`` over the pairs both methods scored: the mean, its 95% percentile
    bootstrap interval (resampling pairs, fixed seed, so a rerun prints the same) and how many pairs
    ``first`` wins. A mean difference whose interval holds 0 is a tie on these pairs, whichever way it falls."""
    scores: dict[str, dict[tuple, float]] = {first: {}, second: {}}
    for row in rows:
        if row["method"] in scores:
            scores[row["method"]][(row["subset"], row["pair"])] = row[metric]
    keys = sorted(scores[first].keys() & scores[second].keys())
    differences = np.array([scores[first][key] - scores[second][key] for key in keys], dtype=np.float64)
    differences = differences[np.isfinite(differences)]
    if differences.size == 0:
        return "no pair scored by both"
    means = np.random.default_rng(0).choice(differences, (resamples, differences.size)).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (f"{first} - {second} per pair {differences.mean():+.4f}, 95% CI [{low:+.4f}, {high:+.4f}], "
            f"{first} ahead on {int((differences > 0).sum())}/{differences.size}")


def ordering_check(evaluation: str, means: dict[str, dict], metric: str,
                   rows: Sequence[dict] = ()) -> Check:
    """conditioned > unconditioned, and both > every baseline, on the mean of ``metric``. With the per-pair
    ``rows``, the detail adds the paired conditioned - unconditioned difference (see paired_difference)."""
    conditioned, unconditioned = means[OURS_CONDITIONED][metric], means[OURS_UNCONDITIONED][metric]
    paired = f" ({paired_difference(rows, metric, OURS_CONDITIONED, OURS_UNCONDITIONED)})" if rows else ""
    failures = []
    if not conditioned > unconditioned:
        failures.append(f"conditioned {conditioned:.4f} <= unconditioned {unconditioned:.4f}")
    for baseline in BASELINES:
        value = means[baseline][metric]
        for label, ours in (("conditioned", conditioned), ("unconditioned", unconditioned)):
            if not ours > value:
                failures.append(f"{label} {ours:.4f} <= {baseline} {value:.4f}")
    if failures:
        return Check(evaluation, False, f"{metric}: " + "; ".join(failures) + paired)
    best = max(BASELINES, key=lambda name: means[name][metric])
    return Check(evaluation, True, f"{metric}: conditioned {conditioned:.4f} > unconditioned {unconditioned:.4f} "
                                   f"> best baseline {best} {means[best][metric]:.4f}{paired}")


# --- the three evaluations --------------------------------------------------------------------------


def evaluate_clean(model: FusionCNN, samples: list[Sample], scorer: Scorer, with_niqe: bool,
                   blind: DegradationEstimator | None, out: Path) -> list[Check]:
    metrics = list(METRIC_NAMES) + (["NIQE"] if with_niqe else [])
    for sample in samples:
        sources = scorer.sources(sample.ir, sample.vi)
        # "ours" is told the pair is clean (all-zero labels, what `fuse --degradation ""` sends); the
        # unconditioned output (null embedding, nothing known) is reported beside it.
        outputs = {OURS: model(sample.ir, sample.vi, labels_condition({})),
                   OURS_UNCONDITIONED: model(sample.ir, sample.vi, None)}
        if blind is not None:  # what --degradation auto does to clean footage, where any level it sees is wrong
            seen = blind.estimate_levels(sample.ir, sample.vi)
            outputs[OURS_AUTO] = model(sample.ir, sample.vi, labels_condition(seen))
        outputs.update((name, fuse(sample.ir, sample.vi)) for name, fuse in BASELINES.items())
        for method, fused in outputs.items():
            scorer.queue(fused, sources, with_niqe, subset=sample.subset, pair=sample.name, method=method)
    rows = scorer.collect(metrics)
    night_rows = [row for row in rows if row["subset"] == NIGHT_SUBSET and row["pair"].endswith("N")]
    summary = mean_rows(rows, metrics, group="all")
    for subset in dict.fromkeys(row["subset"] for row in rows):
        summary += mean_rows([row for row in rows if row["subset"] == subset], metrics, group=subset)
    night_summary = mean_rows(night_rows, metrics, group="msrs_night")
    summary += night_summary
    pairs_file, summary_file = SECTION_FILES["clean"]
    write_csv(out / pairs_file, rows, ["subset", "pair", "method", *metrics])
    write_csv(out / summary_file, summary, ["group", "method", "pairs", *metrics])

    overall = by_method(row for row in summary if row["group"] == "all")
    print(f"\n## a. Clean pairs: mean over {len(samples)} pairs\n")
    print(markdown_table(list(overall.values()), ["method", *metrics]))
    if night_summary:
        print(f"\n### MSRS night pairs ({night_summary[0]['pairs']})\n")
        print(markdown_table(night_summary, ["method", *metrics]))
    checks = clean_checks(overall, by_method(night_summary))
    print("\n" + "\n".join(check.line() for check in checks))
    return checks


def evaluate_synthetic(model: FusionCNN, samples: list[Sample], scorer: Scorer, recipes: Sequence[str],
                       levels: Sequence[int], seed: int, estimator: DepthEstimator, blind: DegradationEstimator | None,
                       out: Path) -> list[Check]:
    rows, summary, checks = [], [], []
    depths: dict[int, torch.Tensor] = {}

    def depth_of(index: int) -> torch.Tensor:  # computed once per pair, and only when a plan needs it
        if index not in depths:
            depths[index] = estimator(samples[index].vi)
        return depths[index]

    print(f"\n## b. Synthetic degradations of the {len(samples)} clean pairs, scored against the clean sources")
    print(f"(depth: {estimator.source}; seed {seed})")
    for recipe in recipes:
        for level in levels:
            for index, sample in enumerate(samples):
                p, degraded = degrade(sample, recipe, level, seed, lambda: depth_of(index))
                sources = scorer.sources(sample.ir, sample.vi)
                outputs = ours_outputs(model, degraded.ir, degraded.vi, p.levels, blind)
                outputs.update((name, fuse(degraded.ir, degraded.vi)) for name, fuse in BASELINES.items())
                for method, fused in outputs.items():
                    scorer.queue(fused, sources, recipe=recipe, level=level, degradations="+".join(p.degradations),
                                 subset=sample.subset, pair=sample.name, method=method)
            recipe_rows = scorer.collect(DEGRADED_METRICS)
            means = mean_rows(recipe_rows, DEGRADED_METRICS, recipe=recipe, level=level)
            rows += recipe_rows
            summary += means
            print(f"\n### {recipe}, level {level}\n")
            print(markdown_table(means, ["method", *DEGRADED_METRICS]))
            recipe_checks = [ordering_check(f"synthetic {recipe} L{level}", by_method(means), metric, recipe_rows)
                             for metric in DEGRADED_METRICS]
            print("\n" + "\n".join(check.line() for check in recipe_checks))
            checks += recipe_checks
    pairs_file, summary_file = SECTION_FILES["synthetic"]
    write_csv(out / pairs_file, rows, ["recipe", "level", "degradations", "subset", "pair", "method", *DEGRADED_METRICS])
    write_csv(out / summary_file, summary, ["recipe", "level", "method", "pairs", *DEGRADED_METRICS])
    return checks


def evaluate_real_degraded(model: FusionCNN, subsets: dict[str, list[Sample]], scorer: Scorer,
                           blind: DegradationEstimator | None, out: Path) -> None:
    metrics = [*DEGRADED_METRICS, *REFERENCE_METRICS]
    rows, summary = [], []
    print("\n## c. Real degraded pairs, scored against their clean references (PSNR_ref, SSIM_ref: luma vs clean VIS)")
    for subset, samples in subsets.items():
        for sample in samples:
            sources = scorer.sources(sample.clean_ir, sample.clean_vi, sample.clean_vi)
            outputs = ours_outputs(model, sample.ir, sample.vi, REAL_DEGRADED[subset], blind)
            outputs.update((name, fuse(sample.ir, sample.vi)) for name, fuse in BASELINES.items())
            for method, fused in outputs.items():
                scorer.queue(fused, sources, subset=subset, pair=sample.name, method=method)
        subset_rows = scorer.collect(metrics)
        means = mean_rows(subset_rows, metrics, subset=subset)
        rows += subset_rows
        summary += means
        label = ", ".join(f"{name}:{level}" for name, level in REAL_DEGRADED[subset].items())
        print(f"\n### {subset} ({len(samples)} pairs; conditioned on {label})\n")
        print(markdown_table(means, ["method", *metrics]))
    pairs_file, summary_file = SECTION_FILES["real"]
    write_csv(out / pairs_file, rows, ["subset", "pair", "method", *metrics])
    write_csv(out / summary_file, summary, ["subset", "method", "pairs", *metrics])


# --- the results folder -----------------------------------------------------------------------------


def evaluation_settings(args: argparse.Namespace) -> dict:
    """What decides the numbers of this run's files (not --threads or --workers), as eval_settings.json records
    it. Paths are relative to the repository, so the record of docs/results reads the same in every checkout."""
    def where(path: Path) -> str:
        return os.path.relpath(path.resolve(), REPO)

    settings = {"checkpoint": where(args.checkpoint), "data": where(args.data),
                "sections": [section for section in SECTIONS if section in args.sections],
                "pairs_per_subset": args.pairs_per_subset, "max_side": args.max_side,
                "estimator": where(args.estimator) if args.blind is not None else None}
    if "clean" in args.sections:
        settings["niqe"] = args.niqe
    if "synthetic" in args.sections:
        settings.update(recipes=list(args.recipes), levels=list(args.levels), seed=args.seed)
    return settings


def other_evaluation(out: Path, settings: dict) -> str | None:
    """Why ``out`` holds the results of an evaluation other than ``settings``'s, or None when it holds none
    (other files do not count) or the same one."""
    present = [name for name in RESULT_FILES if (out / name).exists()]
    if not present:
        return None
    try:
        recorded = read_json_object(out / SETTINGS_FILE, "the settings of an evaluation")
    except ValueError:
        return f"holds {', '.join(present)} of an evaluation whose settings are not recorded in {SETTINGS_FILE}"
    changed = [f"{key}: {recorded.get(key)!r} there, {settings.get(key)!r} now"
               for key in dict.fromkeys([*recorded, *settings]) if recorded.get(key) != settings.get(key)]
    return f"holds the results of another evaluation ({'; '.join(changed)})" if changed else None


def clear_results(out: Path) -> None:
    """Create ``out``, and remove from it every file this script writes (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The checked arguments, with the loaded ``model`` and ``blind`` estimator (None when absent)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=model_folder, required=True,
                        help="folder with model.safetensors and config.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eval data root (subset folders)")
    parser.add_argument("--out", type=output_folder, default=REPO / "docs" / "results",
                        help="folder for the CSV files (default docs/results; see above for what it may hold)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of another evaluation in --out")
    parser.add_argument("--pairs-per-subset", type=positive_int, default=None,
                        help="first N pairs of each subset (default all)")
    parser.add_argument("--recipes", nargs="+", choices=SYNTHETIC_RECIPES, default=list(SYNTHETIC_RECIPES),
                        help="synthetic recipes to run (default all)")
    parser.add_argument("--levels", type=whole_number(1, MAX_LEVEL), nargs="+", default=[3],
                        help="severity levels of the synthetic recipes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic degradation plans")
    parser.add_argument("--max-side", type=non_negative_int, default=None,
                        help=f"box-downscale frames with a longer side above this (default {DEFAULT_MAX_SIDE}; "
                             f"0 = never)")
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    parser.add_argument("--workers", type=positive_int, default=2,
                        help="processes that compute the metrics (1 = this one)")
    parser.add_argument("--estimator", type=Path, default=DEFAULT_ESTIMATOR,
                        help="blind degradation estimator for the ours_auto rows (skipped when the folder is absent)")
    parser.add_argument("--niqe", action="store_true", help="add NIQE to the clean evaluation (slow)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_PAIRS_PER_SUBSET} pairs per subset, frames at most "
                             f"{QUICK_MAX_SIDE} px, unless given explicitly")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a check fails")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="evaluations to run (default all): a. clean, b. synthetic, c. real degraded")
    args = parser.parse_args(argv)
    if args.pairs_per_subset is None and args.quick:
        args.pairs_per_subset = QUICK_PAIRS_PER_SUBSET
    if args.max_side is None:
        args.max_side = QUICK_MAX_SIDE if args.quick else DEFAULT_MAX_SIDE
    args.max_side = args.max_side or None
    args.model = load_model(parser, FusionCNN, args.checkpoint)
    args.blind = (load_model(parser, DegradationEstimator, args.estimator, "--estimator")
                  if (args.estimator / "config.json").is_file() else None)
    clash = other_evaluation(args.out, evaluation_settings(args))
    if clash and not args.overwrite:
        parser.error(f"--out {args.out} {clash}; pass --overwrite to replace those results, or choose another --out")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # tables appear as each evaluation finishes, even in a log file
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, blind = args.model, args.blind
    missing = [name for name in (*CLEAN_SUBSETS, *REAL_DEGRADED) if not (args.data / name).is_dir()]
    downscaled: list[str] = []
    try:
        clean = [sample for subset in CLEAN_SUBSETS if subset not in missing
                 for sample in load_subset(args.data / subset, args.pairs_per_subset, args.max_side,
                                           downscaled=downscaled)]
        real = {subset: load_subset(args.data / subset, args.pairs_per_subset, args.max_side, references=True,
                                    downscaled=downscaled)
                for subset in REAL_DEGRADED if subset not in missing and "real" in args.sections}
    except (PairingError, ImageReadError) as exc:  # unpaired or unreadable files: the message names them
        raise SystemExit(f"error: {exc}") from None
    if not clean:
        raise SystemExit(f"none of the clean subsets {', '.join(CLEAN_SUBSETS)} found in {args.data} "
                         f"(set --data or ALLINONE_DATA)")
    estimator = DepthEstimator.load(None)
    print(f"# Fusion evaluation of {args.checkpoint} ({model.num_parameters():,} parameters)\n")
    print(f"data: {args.data}; {len(clean)} clean pairs from "
          f"{', '.join(subset for subset in CLEAN_SUBSETS if subset not in missing)}; "
          f"{args.threads} torch threads, {args.workers} metric workers"
          + ("; QUICK smoke test, numbers are not meaningful" if args.quick else ""))
    print(f"{OURS_AUTO}: " + (f"told the levels that {args.estimator} sees" if blind is not None
                               else f"skipped, no estimator in {args.estimator}"))
    if missing:
        print(f"subsets not found, skipped: {', '.join(missing)}")
    if downscaled:
        print(f"box-downscaled to at most {args.max_side} px on the longer side: {', '.join(downscaled)}")
    clear_results(args.out)
    checks: list[Check] = []
    timings: dict[str, float] = {}
    # Workers are forked: they inherit the loaded modules and only ever run numpy/scipy metric code.
    pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("fork")) if args.workers > 1 \
        else contextlib.nullcontext()
    with pool as executor, torch.inference_mode():
        scorer = Scorer(executor)
        timings["loading"] = time.perf_counter()
        if "clean" in args.sections:
            checks += evaluate_clean(model, clean, scorer, args.niqe, blind, args.out)
            timings["clean"] = time.perf_counter()
        if "synthetic" in args.sections:
            checks += evaluate_synthetic(model, clean, scorer, args.recipes, args.levels, args.seed, estimator, blind,
                                         args.out)
            timings["synthetic"] = time.perf_counter()
        if "real" in args.sections:
            evaluate_real_degraded(model, real, scorer, blind, args.out)
            timings["real degraded"] = time.perf_counter()
    write_checks(args.out / CHECKS_FILE, checks)
    write_bytes_atomic(args.out / SETTINGS_FILE, (json.dumps(evaluation_settings(args), indent=2) + "\n").encode())
    failed = [check for check in checks if not check.passed]
    print(f"\n## Checks: {len(checks) - len(failed)}/{len(checks)} passed (all lines in {CHECKS_FILE})")
    durations = np.diff([start, *timings.values()])
    print(f"\nCSV files in {args.out}; {durations.sum():.0f} s in all ("
          + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in zip(timings, durations)) + ")")
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
