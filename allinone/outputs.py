"""Checks every command makes on a file it is about to write, before any work is done.

A command that writes a file (a fused image, a video, a CSV, a JSON summary, a contact sheet) must never
replace one of its inputs, even with ``--overwrite``, must not replace an existing file without it, and
should fail at once, not after minutes of work, when the file cannot be created where it is asked for.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


class OutputError(ValueError):
    """An output path the command must not or cannot write; the message names the path and the flag."""


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_file(flag: str, path: Path, *, inputs: Iterable[Path], overwrite: bool,
                      other_outputs: Iterable[Path] = ()) -> None:
    """Raise :class:`OutputError` unless ``path`` may be written as a new file or, with ``overwrite``, replaced.

    Refused, with or without ``overwrite``: an input file (for an input folder: a file inside it that exists),
    another output of the same command, a folder, and a path whose parent is a file. Refused without
    ``overwrite``: an existing file. ``flag`` is the option that named ``path``, for the message.
    """
    resolved = path.resolve()
    for source in inputs:
        source = source.resolve()
        if resolved == source or (source.is_dir() and path.exists() and _is_within(resolved, source)):
            raise OutputError(f"{flag} {path} is an input ({source}); choose another path so the input is kept")
    for other in other_outputs:
        if resolved == other.resolve():
            raise OutputError(f"{flag} {path} is also the output {other}; give each output its own path")
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; it needs a file path")
    ancestor = next(parent for parent in resolved.parents if parent.exists())
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {path}: {ancestor} is a file, so no folder can be created there")
    if path.exists() and not overwrite:
        raise OutputError(f"{flag} {path} exists; pass --overwrite to replace it")
