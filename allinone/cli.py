"""The ``allinone`` command: one subcommand per module in ``allinone.commands``."""
from __future__ import annotations

import os

# No hub access ever: weights come from checkpoints/, packages or local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenMP threads that spin while waiting make a 2-thread torch run 10-20x slower whenever another
# process holds a core (a shared 2-core machine); passive waiting costs little on a quiet one.
# Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
from typing import Callable  # noqa: E402

from . import __version__, console  # noqa: E402

COMMANDS = ("demo", "degrade", "fuse", "contact_sheet", "metrics", "train")


class UserError(Exception):
    """A problem with the user's input or request: printed without a traceback, exit code 2."""


def whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (no upper bound when None)."""
    expected = f">= {low}" if high is None else f"from {low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a whole number {expected}, got {text!r}")
        return value

    return parse


positive_int = whole_number(1)
bit_depth = whole_number(1, 16)  # --ir-bits: the bits a 16-bit IR file really holds


# What the interrupt message tells the user; a command sets ``args.resume_hint`` when re-running it resumes.
RERUN_RESUMES = "run the same command again to resume"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="allinone",
        description="Degradation-aware restoration and fusion of infrared and visible images.")
    parser.add_argument("--version", action="version", version=f"allinone {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("--threads", type=positive_int, default=min(2, os.cpu_count() or 1),
                        help="CPU threads in this process (default: %(default)s); from 2 up, fuse and demo run the "
                             "model's input priors and half the blind estimator's crops in a second thread")
    parser.set_defaults(resume_hint=None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"allinone.commands.{name}").register(subparsers)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from degradations.benchmark import BenchmarkError
    from degradations.io import ImageReadError, OutputWriteError
    from degradations.pairs import PairingError

    from .outputs import OutputError

    return UserError, BenchmarkError, ImageReadError, OutputWriteError, OutputError, PairingError


def _describe(exc: OSError) -> str:
    """An OSError as 'FILE: reason', the way the other errors name their file."""
    if exc.filename is None:
        return str(exc)
    return f"{exc.filename}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console.setup_logging(args.verbose)
    import torch

    torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        console.error(str(exc))
        return 2
    except OSError as exc:  # a folder that cannot be created or read, a full disk: the user's to fix
        console.error(_describe(exc))
        return 2
    except KeyboardInterrupt:
        console.error("interrupted" + (f"; {args.resume_hint}" if args.resume_hint else ""))
        return 130


if __name__ == "__main__":
    # Under `python -m allinone.cli` this file runs as __main__, but commands raise allinone.cli.UserError:
    # run the imported module's main so that there is one UserError class.
    from allinone.cli import main as entry_point

    sys.exit(entry_point())
