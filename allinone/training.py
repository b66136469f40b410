"""Training the joint restoration+fusion CNN on synthesizer triplets.

One loop for every scale: on this CPU it runs in-process; ``accelerate launch -m allinone.cli train``
(or torchrun) runs the same code on several GPUs or nodes, with data-parallel gradients.

A run folder holds::

    config.json        the TrainConfig of the run (a resumed run must match it)
    loss_log.csv       step, seconds, learning rate, total loss and every loss term
    state/             the latest resumable state (model, optimizer, scheduler, RNGs), via accelerate
    model/             the latest weights as safetensors + config.json (what `allinone fuse` loads)
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from degradations.dataset import DEFAULT_RECIPES, TripletDataset

from .conditioning import Condition, drop_condition
from .loss_config import TERMS, LossWeights
from .losses import FusionLoss, check_fusion_loss_options
from .models.fusion_cnn import FusionCNN

log = logging.getLogger("allinone")

REPO = Path(__file__).resolve().parent.parent
ILLUMINATION_SOURCES = ("clean", "darker")
DEFAULT_TRAIN_DATA = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data")) / "train"


@dataclass
class TrainConfig:
    data: str = str(DEFAULT_TRAIN_DATA)
    model: str | dict = "tiny"  # a name in FUSION_CNN_CONFIGS or a config dict
    init_from: str | None = None  # a model folder (save_pretrained) to fine-tune; its config is used
    init_changes: dict[str, Any] = field(default_factory=dict)  # config fields that grow it, e.g. dehaze_prior
    crop: int = 128
    batch_size: int = 8
    steps: int = 3000
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    workers: int = 2
    recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))  # drawn uniformly: repeat one to weight it
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    clean_fraction: float = 0.15
    # Condition dropout: a sample loses its whole condition with this probability (it then gets the
    # null embedding, which is what `fuse --degradation none` uses), and each remaining source with
    # `source_dropout`, so the model works from labels alone, a prompt alone, or nothing.
    condition_dropout: float = 0.3
    source_dropout: float = 0.3
    use_prompts: bool = True
    loss: dict[str, Any] = field(default_factory=dict)  # LossWeights.from_dict overrides
    # Which VIS image sets the illumination weights of the intensity term: "clean" (the clean target,
    # so a synthetic night made from a day scene is weighted as day) or "darker" (the darker of the
    # clean target and the degraded input, as PIAFusion judges its input: a synthetic night leans on
    # the IR as a real one does, while a haze veil that brightens the input moves nothing to the VIS).
    illumination_from: str = "clean"
    # The texture target of the gradient term (allinone.losses.GRADIENT_TARGETS): "strongest_source", the
    # stronger Sobel edge of the two sources (SeAFusion; stages 1 to 5), "max_image", the edges of the
    # per-pixel max image that the max-intensity term asks for, or "max_image_when_clean", the max image for
    # clean samples only (stage 6, configs/finetune_texture.json; docs/BENCHMARKS.md says why not the others).
    gradient_target: str = "strongest_source"
    # The data range of the SSIM loss terms (FusionLoss.ssim_data_range): 1.0 (stages 1 to 6) ignores
    # structure below ~8 grey levels; allinone.losses.EVALUATION_SSIM_DATA_RANGE (2 / 255) counts it.
    ssim_data_range: float = 1.0
    # Whether the SSIM loss terms keep SSIM's luminance factor (FusionLoss.ssim_luminance); off in stages 1 to 7.
    ssim_luminance: bool = False
    log_every: int = 10
    save_every: int = 200

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read the training config ({exc})") from exc
        unknown = set(values) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**values)

    def __post_init__(self) -> None:
        if self.illumination_from not in ILLUMINATION_SOURCES:
            raise ValueError(f"illumination_from must be one of {', '.join(ILLUMINATION_SOURCES)}, "
                             f"got {self.illumination_from!r}")
        check_fusion_loss_options(self.gradient_target, self.ssim_data_range)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``min_lr`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch = {k: torch.stack([it[k] for it in items]) for k in ("ir", "vi", "ir_clean", "vi_clean", "labels")}
    batch["prompt"] = [it["prompt"] for it in items]
    batch["recipe"] = [it["recipe"] for it in items]
    return batch


def _prepare_run(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Create the run folder, or check that a resumed run has the same config."""
    config_file = out / "config.json"
    if config_file.exists():
        previous = json.loads(config_file.read_text())
        if resume:
            # Fields added since the run started take their defaults, so an older run still resumes.
            if {**TrainConfig().to_json(), **previous} != cfg.to_json():
                raise ValueError(f"{out} was trained with another config; resume needs the same config "
                                 "(or use a new --out)")
            return
        if not overwrite:
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or --overwrite to restart")
    out.mkdir(parents=True, exist_ok=True)
    config_file.write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    (out / "loss_log.csv").unlink(missing_ok=True)


def training_dataset(cfg: TrainConfig, processes: int = 1) -> TripletDataset:
    """The triplets of a run; epoch ``e`` is what steps ``e * save_every ...`` of all processes train on.

    An epoch is `save_every` steps of every process; the prepared loader hands each process its own
    batches of it, so data-parallel ranks never train on the same samples and a resumed run (which
    restarts at an epoch boundary, right after a save) sees exactly the data it would have seen.
    """
    return TripletDataset.from_root(
        cfg.data, crop=cfg.crop, recipes=cfg.recipes, levels=cfg.levels, clean_fraction=cfg.clean_fraction,
        samples_per_epoch=cfg.batch_size * max(cfg.save_every, 1) * processes, seed=cfg.seed)


def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
          device: str | None = None) -> FusionCNN:
    """Train (or resume) a FusionCNN; returns the trained model (unwrapped, on CPU)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    out = Path(out)
    # A batch whose conditions were all dropped (or that has no prompt) leaves the label or text MLP
    # without gradient; data-parallel training must expect that instead of waiting for it.
    accelerator = Accelerator(cpu=device == "cpu",
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    set_seed(cfg.seed)

    dataset = training_dataset(cfg, accelerator.num_processes)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=_collate,
                        persistent_workers=False, drop_last=True)
    if cfg.init_changes and not cfg.init_from:
        raise ValueError("init_changes grows the init_from model; set init_from too")
    model = (FusionCNN.from_pretrained(cfg.init_from, **cfg.init_changes).train() if cfg.init_from
             else FusionCNN(cfg.model))
    criterion = FusionLoss(LossWeights.from_dict(cfg.loss), gradient_target=cfg.gradient_target,
                           ssim_data_range=cfg.ssim_data_range, ssim_luminance=cfg.ssim_luminance)
    # The run folder is written only once the data, the init model and the loss weights have loaded, so
    # a bad path or config fails without leaving a folder that blocks the corrected command.
    if accelerator.is_main_process:
        _prepare_run(out, cfg, resume, overwrite)
    accelerator.wait_for_everyone()
    load_state = resume and (out / "state").is_dir()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    step = 0
    if load_state:
        accelerator.load_state(str(out / "state"))
        step = int(json.loads((out / "state" / "step.json").read_text())["step"])
        log.info("resumed %s at step %d", out, step)

    # Condition dropout differs between ranks (as their samples do) and continues after a resume.
    drop_generator = torch.Generator().manual_seed(cfg.seed + step + 1_000_003 * accelerator.process_index)
    log_file = open(out / "loss_log.csv", "a", newline="") if accelerator.is_main_process else None
    writer = csv.writer(log_file) if log_file else None
    if writer and step == 0:
        writer.writerow(["step", "seconds", "lr", "total", *TERMS])
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
               disable=not accelerator.is_main_process)
    model.train()
    try:
        while step < cfg.steps:
            dataset.set_epoch(step // max(cfg.save_every, 1))
            for batch in loader:
                if step >= cfg.steps:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, cfg)
                tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}  # on the device already
                condition = Condition(labels=tensors["labels"], prompts=batch["prompt"] if cfg.use_prompts else None)
                condition = drop_condition(condition, cfg.condition_dropout, drop_generator, cfg.source_dropout)
                fused = model(tensors["ir"], tensors["vi"], condition)
                total, terms = criterion(fused, tensors["ir_clean"], tensors["vi_clean"], tensors["labels"],
                                         illumination_rgb=tensors["vi"] if cfg.illumination_from == "darker" else None)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(total)
                if cfg.grad_clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                step += 1
                bar.update()
                if writer and (step % cfg.log_every == 0 or step == cfg.steps):
                    writer.writerow([step, f"{time.perf_counter() - start:.1f}", f"{lr_at(step - 1, cfg):.6g}",
                                     f"{total.item():.6g}",
                                     *[f"{terms[t].item():.6g}" if t in terms else "" for t in TERMS]])
                    log_file.flush()
                    bar.set_postfix(loss=f"{total.item():.4f}")
                if step % cfg.save_every == 0 or step == cfg.steps:
                    _save(accelerator, model, out, step)
    finally:
        bar.close()
        if log_file:
            log_file.close()
    return accelerator.unwrap_model(model).cpu().eval()


def _save(accelerator, model, out: Path, step: int) -> None:
    """Resumable state and inference weights, each replaced atomically (a kill keeps the previous one)."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    for name, write in (("state", accelerator.save_state), ("model", accelerator.unwrap_model(model).save_pretrained)):
        tmp, final, old = out / f".{name}.tmp", out / name, out / f".{name}.old"
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        write(str(tmp))
        if name == "state":
            (tmp / "step.json").write_text(json.dumps({"step": step}))
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
