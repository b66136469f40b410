"""Train the blind degradation estimator (allinone/models/degradation_estimator.py) on synthesizer triplets.

Each step draws a batch of degraded crops at the native resolution (every recipe, levels 1 to 5, some clean
pairs) and fits, per degradation, the true level (0 = absent) by cross-entropy. A few minutes on 2 CPU cores::

    python scripts/train_estimator.py --out runs/estimator
    cp runs/estimator/model/* checkpoints/degradation_estimator/   # what degradation="auto" loads

The run folder gets ``loss_log.csv`` (step, seconds, lr, loss, mean absolute level error over all degradations) and ``model/``
(safetensors + config.json), written at the end; a run is short enough to restart rather than resume. --out must
be new or empty; a folder holding an earlier estimator run (finished or not) or other files is replaced only with
--overwrite, and a folder holding another kind of run (a fusion model, a config.json) never.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from allinone.models.degradation_estimator import MODEL_TYPE, DegradationEstimator, EstimatorConfig  # noqa: E402
from allinone.training import DEFAULT_TRAIN_DATA  # noqa: E402
from degradations.dataset import TripletDataset  # noqa: E402
from degradations.io import read_json_object  # noqa: E402
from degradations.labels import MAX_LEVEL  # noqa: E402
from script_args import existing_dir, non_negative_int, output_folder, positive_int, usage_error  # noqa: E402

# What an estimator run folder holds: the log, the model, and the model while it is being saved.
RUN_FILES = {"loss_log.csv", "model", "model.partial"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=output_folder, required=True, help="run folder, new or empty (see above)")
    parser.add_argument("--data", type=existing_dir, default=DEFAULT_TRAIN_DATA, help="root of clean pair folders")
    parser.add_argument("--steps", type=positive_int, default=6000)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    # A clean frame is the commonest input, and every level seen in one makes the fusion restore what is not
    # there: with 0.15 the estimator judged 42% of the clean eval pairs clean, with 0.3 it judges 52%.
    parser.add_argument("--clean-fraction", type=float, default=0.3, help="share of undegraded samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=positive_int, default=2, help="torch threads")
    parser.add_argument("--workers", type=non_negative_int, default=2, help="data-loader processes")
    parser.add_argument("--log-every", type=positive_int, default=50)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier estimator run in --out")
    args = parser.parse_args(argv)
    with usage_error(parser, "--data", args.data):  # lists the pairs only, so a bad --data fails before --out is created
        TripletDataset.from_root(args.data)
    return args


def out_problem(out: Path, overwrite: bool) -> str | None:
    """Why this run may not write into ``out``, or None: a new or empty folder, or with ``overwrite`` one that
    holds an earlier estimator run or other files. Another kind of run is never replaced."""
    held = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    if not held:
        return None
    try:
        model_type = read_json_object(out / "model" / "config.json", "a model config").get("model_type")
    except ValueError:  # none there, or not one a model wrote
        model_type = None
    if model_type not in (None, MODEL_TYPE) or "config.json" in held:  # e.g. an `allinone train` run folder
        kind = f"a {model_type!r} model in model/" if model_type not in (None, MODEL_TYPE) else "a config.json"
        return f"{out} holds another kind of run ({kind}), not an estimator run; choose a new or empty folder"
    if overwrite:
        return None
    if model_type == MODEL_TYPE:
        return f"{out} already holds a trained estimator; pass --overwrite to replace it"
    if set(held) <= RUN_FILES:
        return f"{out} holds an unfinished estimator run (no model/); pass --overwrite to replace it"
    listed = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
    return f"{out} is not empty ({listed}); pass --overwrite to write the run into it"


def train_estimator(args: argparse.Namespace) -> DegradationEstimator:
    torch.manual_seed(args.seed)
    model = DegradationEstimator(EstimatorConfig())
    dataset = TripletDataset.from_root(args.data, crop=model.config.crop, clean_fraction=args.clean_fraction,
                                       samples_per_epoch=args.batch_size * args.steps, seed=args.seed)
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, shuffle=False,
                        persistent_workers=args.workers > 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # cosine from lr to lr / 20
        optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps)))
    log_path = args.out / "loss_log.csv"
    start, running = time.perf_counter(), []
    with log_path.open("w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["step", "seconds", "lr", "loss", "level_mae"])
        batches = iter(loader)
        for step in tqdm(range(1, args.steps + 1), desc="training the estimator", unit="step"):
            batch = next(batches)
            logits = model(batch["ir"], batch["vi"])  # (B, L, levels)
            levels = (batch["labels"] * MAX_LEVEL).round().long()
            loss = F.cross_entropy(logits.flatten(0, 1), levels.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            level_error = (logits.detach().argmax(dim=-1) - levels).abs().float().mean().item()
            running.append((loss.item(), level_error))
            if step % args.log_every == 0 or step == args.steps:
                losses, errors = zip(*running)
                writer.writerow([step, f"{time.perf_counter() - start:.1f}", f"{schedule.get_last_lr()[0]:.6g}",
                                 f"{sum(losses) / len(losses):.5f}", f"{sum(errors) / len(errors):.4f}"])
                log.flush()
                running = []
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = out_problem(args.out, args.overwrite)
    if problem:
        print(f"error: --out {problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = train_estimator(args)
    staging = args.out / "model.partial"
    model.save_pretrained(staging)
    if (args.out / "model").exists():
        for file in (args.out / "model").iterdir():
            file.unlink()
        (args.out / "model").rmdir()
    staging.rename(args.out / "model")  # the model folder appears whole or not at all
    print(f"estimator: {args.out / 'model'}; log: {args.out / 'loss_log.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
