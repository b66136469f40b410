"""Which acceptance checks hold across several evaluations: seeds of one recipe, or variants of it.

Usage:
    python scripts/compare_checks.py EVAL_DIR [EVAL_DIR ...] [--names NAME ...] [--all]

Each EVAL_DIR is an --out folder of scripts/eval_fusion.py (it reads the folder's checks.csv). Prints a
markdown table with a row per check that fails in at least one of them (every check with --all), a column
per folder and, last, in how many folders the check holds; then each folder's total. A failing cell gives
the check's numbers. Checks are matched by their evaluation and the name before the colon of their line
("[synthetic haze L3] SSIM", "[clean] VIF ours >= 0.97 x max"); one that a folder did not run is shown as
"-". A check that holds for one seed of a recipe and not for another is a tie at that recipe, whatever the
shipped seed says.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def check_key(evaluation: str, detail: str) -> str:
    """The name a check keeps across runs: its evaluation and the words before its numbers."""
    return f"[{evaluation}] {detail.split(':', 1)[0]}"


def failure_numbers(detail: str) -> str:
    """The numbers of a failing check, without the paired-difference note eval_fusion appends."""
    numbers = detail.split(":", 1)[-1].strip()
    return numbers.split(" (", 1)[0]


def read_checks(folder: Path) -> dict[str, tuple[bool, str]]:
    """``{check name: (passed, detail)}`` from ``folder/checks.csv``, in the file's order."""
    path = folder / "checks.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path}: not found (is {folder} an --out folder of scripts/eval_fusion.py?)")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"evaluation", "passed", "detail"} - set(reader.fieldnames or ())
        if missing:
            raise SystemExit(f"error: {path}: no column {', '.join(sorted(missing))}")
        checks = {}
        for row in reader:
            if row["passed"] not in ("True", "False"):
                raise SystemExit(f"error: {path}: 'passed' must be True or False, not {row['passed']!r}")
            key = check_key(row["evaluation"], row["detail"])
            if key in checks:  # two rows under one name would make the comparison pick one silently
                raise SystemExit(f"error: {path}: the check {key} is listed twice")
            checks[key] = (row["passed"] == "True", row["detail"])
    return checks


def compare_table(runs: dict[str, dict[str, tuple[bool, str]]], every_check: bool = False) -> str:
    """Markdown: a row per check (only those failing somewhere unless ``every_check``), a column per run,
    the count of runs that pass it, and a final row with each run's total."""
    names = list(dict.fromkeys(key for checks in runs.values() for key in checks))
    lines = ["| check | " + " | ".join(runs) + " | holds in |", "|---" * (len(runs) + 2) + "|"]
    for name in names:
        results = [checks.get(name) for checks in runs.values()]
        ran = [result for result in results if result is not None]
        if not every_check and all(passed for passed, _ in ran):
            continue
        cells = ["-" if result is None else "PASS" if result[0] else f"FAIL: {failure_numbers(result[1])}"
                 for result in results]
        held = sum(passed for passed, _ in ran)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {held}/{len(ran)} |")
    totals = [f"{sum(passed for passed, _ in checks.values())}/{len(checks)}" for checks in runs.values()]
    lines.append("| **passed** | " + " | ".join(totals) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="EVAL_DIR",
                        help="--out folders of scripts/eval_fusion.py")
    parser.add_argument("--names", nargs="+", help="column names (default: the folder names)")
    parser.add_argument("--all", action="store_true", help="list every check, not only those failing somewhere")
    args = parser.parse_args(argv)
    names = args.names or [folder.name for folder in args.folders]
    if len(names) != len(args.folders):
        parser.error(f"--names gives {len(names)} names for {len(args.folders)} folders")
    if len(set(names)) != len(names):
        parser.error("the column names must differ (pass --names)")
    runs = {name: read_checks(folder) for name, folder in zip(names, args.folders)}
    print(compare_table(runs, every_check=args.all))


if __name__ == "__main__":
    main()
