"""Argument checks shared by the scripts in this folder: argparse types, and loading that fails as a usage error.

A bad argument must stop a script before it does any work or creates a folder, with a message that names the
argument and the file, and exit status 2 after the usage line (``parser.error``, as the ``allinone`` CLI does),
never with a traceback. Pass the types to ``add_argument(type=...)``; wrap what reads a named file or folder in
:func:`usage_error`, or call :func:`load_model`, right after ``parser.parse_args``.

Scripts import this module as they import each other: ``sys.path`` holds this folder (see mi_sensitivity.py).
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator, TypeVar

from allinone.cli import positive_int, whole_number  # noqa: F401 (positive_int: for the scripts)
from allinone.models.serialization import CONFIG_NAME, WEIGHTS_NAME
from degradations.pairs import PairingError, find_pairs

Model = TypeVar("Model")

non_negative_int = whole_number(0)


def _existing(text: str, folder: bool) -> Path:
    path = Path(text)
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such {kind}")
    if path.is_dir() != folder:
        raise argparse.ArgumentTypeError(f"{text} is a {other}, not a {kind}")
    return path


def existing_dir(text: str) -> Path:
    """An argparse type: a folder that exists."""
    return _existing(text, folder=True)


def existing_file(text: str) -> Path:
    """An argparse type: a file that exists."""
    return _existing(text, folder=False)


def output_folder(text: str) -> Path:
    """An argparse type: a folder to write into, existing or not; refuses a file and a path below a file, which
    would otherwise fail only when the first result is written."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; it needs a folder")
    ancestor = next(parent for parent in path.resolve().parents if parent.exists())
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {ancestor} is a file, so no folder can be created there")
    return path


def model_folder(text: str) -> Path:
    """An argparse type: a folder holding a saved model (``config.json`` and ``model.safetensors``).

    Names the missing file, and suggests ``model/`` inside a training run folder, the likely mistake.
    Whether the folder holds the right kind of model is for :func:`load_model` to say.
    """
    folder = existing_dir(text)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        hint = f"; did you mean {folder / 'model'}?" if (folder / "model" / WEIGHTS_NAME).is_file() else ""
        raise argparse.ArgumentTypeError(f"{text} holds no saved model ({' and '.join(missing)} missing){hint}")
    return folder


def pair_folder(text: str) -> Path:
    """An argparse type: a folder whose ``ir/`` and ``vi/`` hold images paired by name."""
    folder = existing_dir(text)
    try:
        find_pairs(folder / "ir", folder / "vi")
    except PairingError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc}") from exc
    return folder


@contextlib.contextmanager
def usage_error(parser: argparse.ArgumentParser, flag: str | None = None, path: Path | None = None) -> Iterator[None]:
    """Within the block, a failure to read a file or folder (OSError, ValueError) ends
    the script through ``parser.error``. ``flag`` leads the message, and ``path`` (what the flag names) follows
    when the error does not name it itself (a broken file's error often does not)."""
    try:
        yield
    except (OSError, ValueError) as exc:
        message = str(exc)
        if path is not None and str(path) not in message:
            message = f"{path}: {message}"
        parser.error(f"{flag}: {message}" if flag else message)


def load_model(parser: argparse.ArgumentParser, model_class: type[Model], folder: Path,
               flag: str = "--checkpoint") -> Model:
    """``model_class.from_pretrained(folder)``; another kind of model or broken weights end the script through
    ``parser.error``, naming ``flag`` and ``folder``."""
    with usage_error(parser, flag, folder):
        return model_class.from_pretrained(folder)
