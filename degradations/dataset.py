"""MMAIF-style training triplets synthesised on the fly from clean IR/VIS pair folders."""
from __future__ import annotations

import os
import random
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .labels import label_vector
from .io import to_uint8
from .pairs import Pair, discover_pair_folders, find_pairs, load_pair
from .recipes import RECIPES, Plan, apply_steps, item_seed, plan

DEFAULT_RECIPES: tuple[str, ...] = tuple(RECIPES)
CLEAN = "clean"  # pseudo-recipe: the undegraded pair, so the model also learns plain fusion


class TripletDataset(Dataset):
    """Random crops of (degraded IR, degraded VIS, clean IR, clean VIS, labels, prompt).

    Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the pair, the recipe and level, the
    crop and every degradation parameter are drawn from one seeded ``random.Random``. Decoded images and
    depth maps are cached per worker process, so after the first epoch an item costs a crop and the ops.

    Each item is a dict::

        ir, vi            (1, S, S), (3, S, S) degraded inputs in [0, 1] (gray VIS repeated to 3 channels)
        ir_clean, vi_clean  the same crop of the clean sources
        labels            (len(DEGRADATION_TYPES),) level / 5 per degradation, 0 when absent
        prompt            str, '' for clean items
        recipe, name      str
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        crop: int = 128,
        recipes: Sequence[str] = DEFAULT_RECIPES,
        levels: Sequence[int] = (1, 2, 3, 4, 5),
        clean_fraction: float = 0.1,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        depth_model: str | None = None,
    ) -> None:
        if not pairs:
            raise ValueError("TripletDataset needs at least one pair")
        for recipe in recipes:
            if recipe not in RECIPES:
                raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
        self.pairs = list(pairs)
        self.crop = crop
        self.recipes = list(recipes)
        self.levels = list(levels)
        self.clean_fraction = clean_fraction
        self.samples_per_epoch = samples_per_epoch or len(self.pairs) * 8
        self.seed = seed
        self.depth_model = depth_model
        self.epoch = 0
        self._images: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._depths: dict[str, torch.Tensor] = {}
        self._depth_estimator = None

    @classmethod
    def from_root(cls, root: str | os.PathLike, **kwargs: Any) -> "TripletDataset":
        """All pairs of every folder under ``root`` that holds ``ir/`` and ``vi/``."""
        folders = discover_pair_folders(root)
        pairs = [Pair(f"{folder.name}/{p.name}", p.ir, p.vi)
                 for folder in folders for p in find_pairs(folder / "ir", folder / "vi")]
        return cls(pairs, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    # Images are kept as uint8 arrays: 4x smaller than float, and decoding happens once per worker.
    def _load(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        if pair.name not in self._images:
            ir, vi = load_pair(pair, align="resize", ir_bits=None)
            self._images[pair.name] = (to_uint8(ir), to_uint8(vi))
        return self._images[pair.name]

    def _depth(self, pair: Pair, vi: torch.Tensor) -> torch.Tensor:
        if pair.name not in self._depths:
            from .depth import DepthEstimator

            if self._depth_estimator is None:
                self._depth_estimator = DepthEstimator.load(self.depth_model)
            with torch.inference_mode():
                self._depths[pair.name] = self._depth_estimator(vi).half()
        return self._depths[pair.name].float()

    def _draw(self, index: int) -> tuple[random.Random, Pair, str, Plan | None]:
        """The item's generator, pair, recipe and plan (None for a clean item); the crop is drawn next."""
        rng = random.Random(item_seed(self.seed, f"{self.epoch}/{index}", "triplet", 0))
        pair = self.pairs[rng.randrange(len(self.pairs))]
        clean = rng.random() < self.clean_fraction
        recipe = CLEAN if clean else rng.choice(self.recipes)
        p = None if clean else plan(recipe, rng.choice(self.levels), rng.getrandbits(63))
        return rng, pair, recipe, p

    def prompt_at(self, index: int) -> str:
        """The prompt of item ``index`` of the current epoch, without rendering the item."""
        p = self._draw(index)[3]
        return p.prompt if p is not None else ""

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng, pair, recipe, p = self._draw(index)
        ir_u8, vi_u8 = self._load(pair)
        ir = torch.from_numpy(ir_u8).float().div_(255)[None, None]
        vi = torch.from_numpy(vi_u8).float().div_(255)
        vi = vi[None, None] if vi.dim() == 2 else vi.permute(2, 0, 1)[None]
        depth = self._depth(pair, vi) if p is not None and p.needs_depth else None

        ir, vi, depth = self._random_crop(rng, ir, vi, depth)
        with torch.inference_mode():
            ir_d, vi_d = apply_steps(p.steps, ir, vi, depth) if p is not None else (ir, vi)
        return {
            "ir": ir_d[0].clone(),
            "vi": vi_d[0].expand(3, -1, -1).clone(),
            "ir_clean": ir[0].clone(),
            "vi_clean": vi[0].expand(3, -1, -1).clone(),
            "labels": label_vector(p.levels if p is not None else {}),
            "prompt": p.prompt if p is not None else "",
            "recipe": recipe,
            "name": pair.name,
        }

    def _random_crop(self, rng: random.Random, *images: torch.Tensor | None) -> list[torch.Tensor | None]:
        """The same random crop of every image; images smaller than the crop are reflect-padded first."""
        h, w = images[0].shape[-2:]
        size = self.crop
        pad_h, pad_w = max(0, size - h), max(0, size - w)
        if pad_h or pad_w:
            images = tuple(
                None if x is None else torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
                for x in images)
            h, w = h + pad_h, w + pad_w
        top, left = rng.randint(0, h - size), rng.randint(0, w - size)
        return [None if x is None else x[..., top:top + size, left:left + size] for x in images]
