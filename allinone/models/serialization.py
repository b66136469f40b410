"""Model folders as diffusers writes them: ``model.safetensors`` (weights, no pickle) and ``config.json``.

The JSON carries ``model_type`` and ``format_version`` next to the architecture fields, so a folder says what
it holds and a reader refuses a folder it cannot rebuild.
"""
from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from degradations.io import USUAL_FILE_MODE, read_json_object

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

Config = TypeVar("Config")


def config_from_dict(cls: type[Config], values: dict[str, Any]) -> Config:
    """A frozen config dataclass from its JSON fields (lists back to tuples); unknown fields raise."""
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def save_model(model: nn.Module, folder: str | Path, model_type: str, format_version: int,
               config: dict[str, Any]) -> None:
    """Write ``model``'s state dict and ``config`` (plus type and version) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_NAME, metadata={"model_type": model_type, "format_version": str(format_version)})
    (folder / WEIGHTS_NAME).chmod(USUAL_FILE_MODE)  # safetensors writes 0600
    document = {"model_type": model_type, "format_version": format_version, **config}
    (folder / CONFIG_NAME).write_text(json.dumps(document, indent=2) + "\n")


def read_config(folder: str | Path, model_type: str, format_version: int) -> dict[str, Any]:
    """The architecture fields of ``folder``'s config; raises FileNotFoundError when ``folder`` holds no
    config and ValueError for another model type or format version."""
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{folder} holds no saved model ({CONFIG_NAME} not found)")
    document = read_json_object(folder / CONFIG_NAME, "a model config")
    found_type, version = document.pop("model_type", None), document.pop("format_version", None)
    if found_type != model_type:
        raise ValueError(f"{folder} holds a {found_type!r} model, expected {model_type!r}")
    if version != format_version:
        raise ValueError(f"{folder} has format version {version}, this code reads {format_version}")
    return document


def load_weights(model: nn.Module, folder: str | Path, device: str | torch.device = "cpu",
                 allow_missing: bool = False) -> None:
    """Load ``folder``'s weights into ``model``; ``allow_missing`` lets parts the saved model lacks keep their
    initialisation (a model grown before a fine-tune). Raises ValueError, naming the file, when the weights
    cannot be read or do not fit."""
    folder = Path(folder)
    try:
        state = load_file(folder / WEIGHTS_NAME, device=str(device))
    except SafetensorError as exc:  # a truncated or corrupt file; safetensors' message names none
        raise ValueError(f"{folder / WEIGHTS_NAME}: cannot read the weights ({exc})") from exc
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: the config does not fit the weights
        raise ValueError(f"{folder}: weights do not fit the config: {exc}") from exc
    if unexpected or (missing and not allow_missing):
        raise ValueError(f"{folder}: weights do not match the config (missing {missing}, unexpected {unexpected})")
