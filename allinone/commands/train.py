"""``allinone train``: train the fusion CNN on synthesizer triplets (CPU here; GPUs via accelerate)."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

from .. import console
from ..cli import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the joint restoration+fusion CNN",
        description="Trains on degraded triplets synthesised on the fly from clean pair folders. "
                    "Multi-GPU / multi-node: `accelerate launch -m allinone.cli train ...`.")
    p.add_argument("--config", help="JSON training config (see configs/); options below override it")
    p.add_argument("--out", required=True, help="run folder (config, loss log, resumable state, model)")
    p.add_argument("--data", help="root of clean pair folders (default: ../shared/data/train or $ALLINONE_DATA/train)")
    p.add_argument("--init-from", help="model folder to fine-tune (overrides the config's init_from)")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data-loader worker processes")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto",
                   help="cpu forces the CPU; auto takes what accelerate finds")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    p.add_argument("--overwrite", action="store_true", help="restart a run that exists in --out")
    p.set_defaults(func=run, resume_hint="add --resume to the same command to continue from the last saved state")


def run(args: argparse.Namespace) -> int:
    from ..cli import UserError
    from ..training import TrainConfig, saved_step, train

    try:
        cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        options = ("data", "init_from", "steps", "batch_size", "seed", "workers")
        cfg = replace(cfg, **{option: getattr(args, option) for option in options if getattr(args, option) is not None})
        # Where a resume starts, for the report (train() checks that it is this run's state).
        start = saved_step(args.out) if args.resume else 0
        model = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                      device="cpu" if args.device == "cpu" else None)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one report per run, not one per data-parallel process
        return 0
    if start == cfg.steps:
        console.success(f"{args.out} was already complete ({cfg.steps} steps): nothing to train; "
                        f"weights: {args.out}/model")
    else:
        resumed = f" (resumed at step {start})" if start else ""
        console.success(f"trained {model.num_parameters():,} parameters for {cfg.steps - start} steps{resumed}; "
                        f"weights: {args.out}/model, loss log: {args.out}/loss_log.csv")
    print(json.dumps({"out": args.out, "steps": cfg.steps}))
    return 0
