"""``allinone train``: train the fusion CNN on synthesizer triplets (CPU here; GPUs via accelerate)."""
from __future__ import annotations

import argparse
import json

from .. import console


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train the joint restoration+fusion CNN",
        description="Trains on degraded triplets synthesised on the fly from clean pair folders. "
                    "Multi-GPU / multi-node: `accelerate launch -m allinone.cli train ...`.")
    p.add_argument("--config", help="JSON training config (see configs/); options below override it")
    p.add_argument("--out", required=True, help="run folder (config, loss log, resumable state, model)")
    p.add_argument("--data", help="root of clean pair folders (default: ../shared/data/train or $ALLINONE_DATA/train)")
    p.add_argument("--init-from", help="model folder to fine-tune (overrides the config's init_from)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="data-loader worker processes")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto",
                   help="cpu forces the CPU; auto takes what accelerate finds")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    p.add_argument("--overwrite", action="store_true", help="restart a run that exists in --out")
    p.set_defaults(func=run, resume_hint="add --resume to the same command to continue from the last saved state")


def run(args: argparse.Namespace) -> int:
    from ..cli import UserError
    from ..training import TrainConfig, train

    try:
        cfg = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    for option in ("data", "init_from", "steps", "batch_size", "seed", "workers"):
        if getattr(args, option) is not None:
            setattr(cfg, option, getattr(args, option))
    try:
        model = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                      device="cpu" if args.device == "cpu" else None)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one report per run, not one per data-parallel process
        return 0
    console.success(f"trained {model.num_parameters():,} parameters for {cfg.steps} steps; "
                    f"weights: {args.out}/model, loss log: {args.out}/loss_log.csv")
    print(json.dumps({"out": args.out, "steps": cfg.steps}))
    return 0
