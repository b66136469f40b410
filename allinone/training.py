"""Training the joint restoration+fusion CNN on synthesizer triplets.

One loop for every scale: on this CPU it runs in-process; ``accelerate launch -m allinone.cli train``
(or torchrun) runs the same code on several GPUs or nodes, with data-parallel gradients.

A run folder holds::

    config.json        the TrainConfig of the run (a resumed run must match it)
    loss_log.csv       step, seconds, learning rate, total loss and every loss term
    state/             the latest resumable state (model, optimizer, scheduler, RNGs), via accelerate
    model/             the latest weights as safetensors + config.json (what `allinone fuse` loads)

A resumed run goes on from state/ as the run would have gone on, with the same samples, condition dropout and
prompt embeddings (the text encoder embeds each prompt on its own, so a resumed process gets the same vectors),
and ends with the same weights as a run that was never interrupted.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from degradations.dataset import DEFAULT_RECIPES, TripletDataset
from degradations.io import USUAL_FILE_MODE, read_json_object, write_bytes_atomic
from degradations.labels import MAX_LEVEL
from degradations.recipes import RECIPES, item_seed

from .conditioning import Condition, drop_condition
from .loss_config import TERMS, LossWeights
from .losses import FusionLoss, check_fusion_loss_options
from .models.fusion_cnn import FUSION_CNN_CONFIGS, FusionCNN, FusionCNNConfig
from .models.serialization import CONFIG_NAME, WEIGHTS_NAME

log = logging.getLogger("allinone")

REPO = Path(__file__).resolve().parent.parent
ILLUMINATION_SOURCES = ("clean", "darker")
DEFAULT_TRAIN_DATA = Path(os.environ.get("ALLINONE_DATA", REPO.parent / "shared" / "data")) / "train"
LOG_HEADER = ("step", "seconds", "lr", "total", *TERMS)
MIN_CROP = 16  # the patch of the exposure loss term (losses.exposure_control_loss); smaller crops fail in it
# What a run writes in its folder: what --overwrite removes (and nothing else a user keeps there). _save
# replaces each SAVED folder through .NAME.tmp and .NAME.old, which a kill can leave behind.
SAVED = ("state", "model")
RUN_FILES = ("config.json", "loss_log.csv", *SAVED, *(f".{name}.{part}" for name in SAVED for part in ("tmp", "old")))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is a Python int too


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


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
        values = read_json_object(path, "the training config")
        unknown = set(values) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError naming the first setting that training cannot use, and what it takes.

        Runs when a config is built or read, so a bad value fails before any work and before the run folder
        is touched, instead of as a traceback (or a silently different run) steps into training.
        """
        for key, minimum in (("steps", 1), ("batch_size", 1), ("crop", MIN_CROP), ("save_every", 1), ("log_every", 1),
                             ("warmup_steps", 0), ("workers", 0), ("seed", 0)):
            value = getattr(self, key)
            _require(_whole(value) and value >= minimum, key, f"a whole number >= {minimum}", value)
        _require(_number(self.lr) and self.lr > 0, "lr", "a number > 0", self.lr)
        for key in ("min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, key)
            _require(_number(value) and value >= 0, key, "a number >= 0", value)
        for key in ("clean_fraction", "condition_dropout", "source_dropout"):
            value = getattr(self, key)
            _require(_number(value) and 0 <= value <= 1, key, "a number in [0, 1]", value)
        for key in ("use_prompts", "ssim_luminance"):
            _require(isinstance(getattr(self, key), bool), key, "true or false", getattr(self, key))
        _require(isinstance(self.data, str) and self.data != "", "data", "a folder path", self.data)
        _require(isinstance(self.model, dict) or (isinstance(self.model, str) and self.model in FUSION_CNN_CONFIGS),
                 "model", f"one of {', '.join(FUSION_CNN_CONFIGS)} or an object of FusionCNNConfig fields", self.model)
        _require(self.init_from is None or (isinstance(self.init_from, str) and self.init_from != ""), "init_from",
                 "a model folder path or null", self.init_from)
        model_fields = {f.name for f in fields(FusionCNNConfig)}
        _require(isinstance(self.init_changes, dict) and set(self.init_changes) <= model_fields, "init_changes",
                 f"an object of FusionCNNConfig fields ({', '.join(sorted(model_fields))})", self.init_changes)
        if self.init_changes and not self.init_from:
            raise ValueError("init_changes grows the init_from model; set init_from too")
        _require(isinstance(self.recipes, list) and self.recipes != []
                 and all(isinstance(recipe, str) and recipe in RECIPES for recipe in self.recipes),
                 "recipes", f"a non-empty list of names from {', '.join(RECIPES)}", self.recipes)
        _require(isinstance(self.levels, list) and self.levels != []
                 and all(_whole(level) and 1 <= level <= MAX_LEVEL for level in self.levels),
                 "levels", f"a non-empty list of whole numbers 1..{MAX_LEVEL}", self.levels)
        _require(isinstance(self.loss, dict), "loss", "an object of loss weights", self.loss)
        for key, build in (("model", FusionCNNConfig.from_dict), ("loss", LossWeights.from_dict)):
            if isinstance(getattr(self, key), dict):
                try:
                    build(getattr(self, key))
                except ValueError as exc:  # an unknown field or loss term, a weight that is not a number
                    raise ValueError(f"{key}: {exc}") from None
        if self.illumination_from not in ILLUMINATION_SOURCES:
            raise ValueError(f"illumination_from must be one of {', '.join(ILLUMINATION_SOURCES)}, "
                             f"got {self.illumination_from!r}")
        _require(_number(self.ssim_data_range), "ssim_data_range", "a number", self.ssim_data_range)
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


def saved_step(out: str | os.PathLike) -> int:
    """The step of the resumable state saved in the run folder ``out``; 0 when none has been saved yet."""
    out = Path(out)
    if not (out / "state").is_dir():
        return 0
    step = read_json_object(out / "state" / "step.json", "the saved step").get("step")
    if not _whole(step):
        raise ValueError(f"{out / 'state' / 'step.json'}: no step number in it")
    return step


def _check_apart(out: Path, what: str, folder: Path) -> None:
    """Refuse an ``out`` that is an input ``folder``, lies in it or holds it: the run would write among (or,
    with --overwrite, remove) the input's files."""
    out_resolved, folder_resolved = out.resolve(), folder.resolve()
    if out_resolved == folder_resolved:
        relation = "is"
    elif folder_resolved in out_resolved.parents:
        relation = "is inside"
    elif out_resolved in folder_resolved.parents:
        relation = "holds"
    else:
        return
    raise ValueError(f"--out {out} {relation} the {what} {folder}; choose another --out so that it is kept")


def _config_changes(previous: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """``key: before -> now`` for each setting in which ``cfg`` differs from a run's saved config."""
    # Fields added since the run started take their defaults, so an older run still resumes.
    before, now = {**TrainConfig().to_json(), **previous}, cfg.to_json()
    return [f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
            for key in sorted(before.keys() | now.keys()) if before.get(key) != now.get(key)]


def _check_run_folder(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> int:
    """Raise ValueError unless this run may be written to ``out``; returns the step it starts at (the saved
    step when resuming). Only reads: the folder is written once the data and the model have loaded too."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite restarts it; pass only one")
    blocker = next(folder for folder in (out, *out.parents) if folder.exists())  # "." or "/" at the latest
    if not blocker.is_dir():
        raise ValueError(f"--out {out} is a file, not a run folder" if blocker == out
                         else f"--out {out}: {blocker} is a file, so no run folder can be created there")
    for what, folder in (("init_from model", cfg.init_from), ("data folder", cfg.data)):
        if folder:
            _check_apart(out, what, Path(folder))
    config_file = out / "config.json"
    previous = read_json_object(config_file, "the run's config") if config_file.is_file() else None
    if previous is not None and "model_type" in previous:
        raise ValueError(f"--out {out} holds a saved {previous['model_type']} model, not a training run; "
                         "choose another --out so that the model is kept")
    if resume:
        if previous is None:
            raise ValueError(f"nothing to resume in {out}; leave out --resume to start a run")
        changes = _config_changes(previous, cfg)
        if changes:
            raise ValueError(f"{out} was trained with another config ({'; '.join(changes)}); resume needs the same "
                             "config (or use a new --out)")
        step = saved_step(out)
        if step > cfg.steps:
            raise ValueError(f"{out / 'state'} was saved at step {step}, past the run's {cfg.steps} steps, so it is "
                             "not this run's state; pass --overwrite instead of --resume to restart the run")
        return step
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        raise ValueError(f"{out} already holds a run ({', '.join(found)}); pass --resume to continue it or "
                         "--overwrite to restart")
    return 0


def _start_run(out: Path, cfg: TrainConfig, step: int) -> float:
    """Write the run folder of a run that starts at ``step``; returns the seconds logged up to that step.

    A run from step 0 first removes what an earlier run left there (only the files a run writes), so an
    interrupted restart is never resumed as the old run, and writes its config. A resumed run cuts the loss
    log back to the saved step, since it trains (and logs) the steps after it again. The log is replaced
    atomically, with its header once.
    """
    log_file = out / "loss_log.csv"
    rows: list[list[str]] = []
    if step == 0:
        for name in RUN_FILES:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink(missing_ok=True)
        write_bytes_atomic(out / "config.json", (json.dumps(cfg.to_json(), indent=2) + "\n").encode())
    elif log_file.is_file():
        with log_file.open(newline="") as f:  # header lines (a log before this fix may hold two) are skipped
            rows = [row for row in csv.reader(f) if row and row[0].isdigit() and int(row[0]) <= step]
    text = io.StringIO()
    csv.writer(text).writerows([LOG_HEADER, *rows])
    write_bytes_atomic(log_file, text.getvalue().encode())
    return float(rows[-1][1]) if rows else 0.0


def _initial_model(cfg: TrainConfig) -> FusionCNN:
    """The model a run starts from: a new ``cfg.model``, or the one saved in ``cfg.init_from``."""
    if not cfg.init_from:
        return FusionCNN(cfg.model)
    folder = Path(cfg.init_from)
    if (folder / "model" / CONFIG_NAME).is_file() and not (folder / WEIGHTS_NAME).is_file():
        raise ValueError(f"init_from {folder} is a training run, not a model folder; its model is {folder / 'model'}")
    return FusionCNN.from_pretrained(folder, **cfg.init_changes).train()


def training_dataset(cfg: TrainConfig, processes: int = 1) -> TripletDataset:
    """The triplets of a run; epoch ``e`` is what steps ``e * save_every ...`` of all processes train on.

    An epoch is `save_every` steps of every process; the prepared loader hands each process its own
    batches of it, so data-parallel ranks never train on the same samples and a resumed run (which
    restarts at an epoch boundary, right after a save) sees exactly the data it would have seen.
    """
    return TripletDataset.from_root(
        cfg.data, crop=cfg.crop, recipes=cfg.recipes, levels=cfg.levels, clean_fraction=cfg.clean_fraction,
        samples_per_epoch=cfg.batch_size * cfg.save_every * processes, seed=cfg.seed)


def train(cfg: TrainConfig, out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
          device: str | None = None) -> FusionCNN:
    """Train (or resume) a FusionCNN; returns the trained model (unwrapped, on CPU).

    ``resume`` continues the run in ``out`` from its saved state (it must exist and have the same config);
    ``overwrite`` replaces a run there. Either way the folder is left as it was when anything fails before
    training starts: the config, the folder, the data, the init model and the loss weights are checked first.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    out = Path(out)
    cfg.check()  # a TrainConfig is mutable: settings changed after it was built are checked here
    # A batch whose conditions were all dropped (or that has no prompt) leaves the label or text MLP
    # without gradient; data-parallel training must expect that instead of waiting for it.
    accelerator = Accelerator(cpu=device == "cpu",
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    step = _check_run_folder(out, cfg, resume, overwrite)
    set_seed(cfg.seed)

    dataset = training_dataset(cfg, accelerator.num_processes)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=_collate,
                        persistent_workers=False, drop_last=True)
    model = _initial_model(cfg)
    criterion = FusionLoss(LossWeights.from_dict(cfg.loss), gradient_target=cfg.gradient_target,
                           ssim_data_range=cfg.ssim_data_range, ssim_luminance=cfg.ssim_luminance)
    # The run folder is written only once every process has checked it and loaded the data, the init model
    # and the loss weights, so a bad path or config fails without touching a run or leaving a folder that
    # blocks the corrected command.
    accelerator.wait_for_everyone()
    logged_seconds = _start_run(out, cfg, step) if accelerator.is_main_process else 0.0
    accelerator.wait_for_everyone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if step:
        accelerator.load_state(str(out / "state"))
        log.info("resumed %s at step %d", out, step)
    elif resume:
        log.info("%s has no saved state yet; its run starts again from step 0", out)

    drop_generator = torch.Generator()
    log_file = open(out / "loss_log.csv", "a", newline="") if accelerator.is_main_process else None
    writer = csv.writer(log_file) if log_file else None
    start = time.perf_counter() - logged_seconds
    bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", dynamic_ncols=True,
               disable=not accelerator.is_main_process)
    model.train()
    try:
        while step < cfg.steps:
            epoch = step // cfg.save_every
            # Through the prepared loader: at each pass it sets the dataset's epoch to its own count of passes,
            # which starts again at 0 in a resumed run.
            loader.set_epoch(epoch)
            # Condition dropout is drawn per epoch, as the samples are, so a resumed run (which restarts at
            # an epoch boundary) drops what the uninterrupted run dropped; it differs between ranks, as
            # their samples do.
            drop_generator.manual_seed(item_seed(cfg.seed, f"{epoch}/{accelerator.process_index}",
                                                 "condition_dropout", 0))
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
    for name, write in zip(SAVED, (accelerator.save_state, accelerator.unwrap_model(model).save_pretrained)):
        tmp, final, old = out / f".{name}.tmp", out / name, out / f".{name}.old"
        for stale in (tmp, old):
            if stale.exists():
                shutil.rmtree(stale)
        write(str(tmp))
        if name == "state":
            (tmp / "step.json").write_text(json.dumps({"step": step}))
        for file in tmp.iterdir():  # accelerate's state files come from safetensors too, with mode 0600
            file.chmod(USUAL_FILE_MODE)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
