"""The degraded-benchmark generator behind ``allinone degrade``.

Layout of an output folder::

    out/
      run.json                 what was asked (inputs, recipes, levels, seed, ...); resume checks it
      manifest.jsonl           one record per (pair, recipe, level), sorted; written when the run completes
      manifest.partial.jsonl   records of finished items while the run is under way (resume reads it)
      README.md                what the benchmark is and how to regenerate it
      clean/{ir,vi}/NAME.png   the clean sources as they were read (IR one channel, aligned)
      RECIPE/LEVEL/{ir,vi}/NAME.png

Every image is written atomically, and a record is appended only after both of its images exist, so a
killed run resumes where it stopped. Each item is rendered with one torch thread from a seed that
depends only on (seed, pair name, recipe, level), so any number of workers writes the same bytes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import torch
from tqdm.auto import tqdm

from . import recipes as recipes_mod
from .io import encode_png, read_json_object, to_uint8, write_bytes_atomic
from .pairs import Pair, find_pairs, load_pair, require_same_sizes
from .recipes import Plan, Step, apply_steps, item_seed, plan

if TYPE_CHECKING:
    from .depth import DepthEstimator

log = logging.getLogger("degradations")

FORMAT_VERSION = 1
MANIFEST = "manifest.jsonl"
PARTIAL = "manifest.partial.jsonl"
RUN_FILE = "run.json"
# What replay reads from each manifest record.
_RECORD_KEYS = {"name", "recipe", "level", "ir_source", "vi_source", "steps", "sha256"}


class BenchmarkError(RuntimeError):
    """The run cannot go ahead as asked; the message says why and what to do."""


@dataclass
class BenchmarkConfig:
    ir_dir: str
    vi_dir: str
    recipes: list[str]
    levels: list[int]
    seed: int = 0
    align: str = "error"  # "error" or "resize" (IR resized to the VIS size)
    ir_bits: int | None = None
    depth_model: str | None = None  # local Depth Anything V2 folder; None: env var / HF cache / heuristic
    pairs: list[str] = field(default_factory=list)
    version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Item:
    pair: Pair
    recipe: str
    level: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.recipe, self.level, self.pair.name)


# --- rendering one item (shared by generation and replay) -----------------------------------------------

_DEPTH = None  # per-process DepthCache, built on first use


@functools.cache
def depth_estimator(depth_model: str | None) -> DepthEstimator:
    """This process's depth estimator for ``depth_model``, loaded once.

    A model folder given explicitly must load (else ``FileNotFoundError`` / ``OSError`` naming it): haze made
    with another depth than the one asked for would be silently wrong. Only the default lookup (``None``)
    falls back, with a warning, to the heuristic.
    """
    from .depth import DepthEstimator

    return DepthEstimator.load(depth_model, fallback=depth_model is None)


def _depth_for(vi: torch.Tensor, depth_model: str | None, cache_dir: Path):
    """Depth of the clean VIS image, through the per-process disk cache (keyed by the image's content,
    so every item of a pair shares one map). Returns (depth, source)."""
    global _DEPTH
    from .depth import DepthCache

    estimator = depth_estimator(depth_model)
    if _DEPTH is None or _DEPTH.estimator is not estimator or _DEPTH.folder != cache_dir:
        _DEPTH = DepthCache(cache_dir, estimator)
    return _DEPTH(vi), estimator.source


def _needs_depth(ops: Iterable[str]) -> bool:
    return any(recipes_mod.OPS[op].needs_depth for op in ops)


def render(steps: list[Step], pair: Pair, cfg: BenchmarkConfig, cache_dir: Path):
    """Clean and degraded images of one item, and the depth source used (None if no haze)."""
    ir, vi = load_pair(pair, cfg.align, cfg.ir_bits)
    depth = source = None
    if _needs_depth(s.op for s in steps):
        depth, source = _depth_for(vi, cfg.depth_model, cache_dir)
    with torch.inference_mode():
        ir_d, vi_d = apply_steps(steps, ir, vi, depth)
    return {"clean_ir": ir, "clean_vi": vi, "ir": ir_d, "vi": vi_d}, source


def output_paths(item_or_record: Item | dict[str, Any]) -> dict[str, str]:
    """Paths (relative to the benchmark folder) of an item's images."""
    if isinstance(item_or_record, Item):
        recipe, level, name = item_or_record.recipe, item_or_record.level, item_or_record.pair.name
    else:
        recipe, level, name = item_or_record["recipe"], item_or_record["level"], item_or_record["name"]
    return {"ir": f"{recipe}/{level}/ir/{name}.png", "vi": f"{recipe}/{level}/vi/{name}.png",
            "clean_ir": f"clean/ir/{name}.png", "clean_vi": f"clean/vi/{name}.png"}


def _write_outputs(out: Path, paths: dict[str, str], images: dict[str, torch.Tensor]) -> dict[str, str]:
    """Write an item's PNGs atomically; returns the SHA-256 of the degraded ones."""
    digests = {}
    for role, image in images.items():
        target = out / paths[role]
        # Clean images are shared by every item of a pair: identical bytes, so write them once.
        if role.startswith("clean_") and target.exists():
            continue
        data = encode_png(image)
        write_bytes_atomic(target, data)
        if not role.startswith("clean_"):
            digests[role] = hashlib.sha256(data).hexdigest()
    return digests


def _make_record(item: Item, cfg: BenchmarkConfig, p: Plan, depth_source: str | None,
                 digests: dict[str, str]) -> dict[str, Any]:
    return {
        "name": item.pair.name,
        "recipe": item.recipe,
        "level": item.level,
        "seed": cfg.seed,
        "item_seed": item_seed(cfg.seed, item.pair.name, item.recipe, item.level),
        "ir_source": str(item.pair.ir),
        "vi_source": str(item.pair.vi),
        "degradations": p.degradations,
        "levels": p.levels,
        "prompt": p.prompt,
        "steps": [s.to_dict() for s in p.steps],
        "depth_source": depth_source,
        "outputs": {k: v for k, v in output_paths(item).items() if not k.startswith("clean_")},
        "sha256": digests,
    }


def _init_worker(logged: set[str]) -> None:
    from . import depth

    torch.set_num_threads(1)
    # The parent has shown these (missing depth weights, say) through the CLI's console already; a worker
    # has no such handler and would print each again, bare, once per process.
    depth._logged_messages.update(logged)


def _plan(item: Item, cfg: BenchmarkConfig) -> Plan:
    return plan(item.recipe, item.level, item_seed(cfg.seed, item.pair.name, item.recipe, item.level))


def _generate_item(item: Item, cfg: BenchmarkConfig, out: Path) -> dict[str, Any]:
    p = _plan(item, cfg)
    images, source = render(p.steps, item.pair, cfg, out / ".cache" / "depth")
    digests = _write_outputs(out, output_paths(item), images)
    return _make_record(item, cfg, p, source, digests)


def _replay_item(record: dict[str, Any], pair: Pair, cfg: BenchmarkConfig, out: Path) -> dict[str, Any]:
    steps = [Step.from_dict(s) for s in record["steps"]]
    images, _ = render(steps, pair, cfg, out / ".cache" / "depth")
    digests = _write_outputs(out, output_paths(record), images)
    return {"key": (record["recipe"], record["level"], record["name"]), "sha256": digests}


def _run_tasks(fn, tasks: list[tuple], workers: int, desc: str) -> Iterator[Any]:
    """Yield fn(*task) for every task, in completion order, with a progress bar."""
    bar = tqdm(total=len(tasks), desc=desc, unit="item", dynamic_ncols=True)
    try:
        if workers <= 1:
            previous = torch.get_num_threads()
            torch.set_num_threads(1)  # same arithmetic as a worker process, hence the same bytes
            try:
                for task in tasks:
                    yield fn(*task)
                    bar.update()
            finally:
                torch.set_num_threads(previous)
            return
        from . import depth

        # spawn, not fork: forking a process whose torch thread pool is running can deadlock.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(set(depth._logged_messages),)) as pool:
            futures = [pool.submit(fn, *task) for task in tasks]
            try:
                for future in as_completed(futures):
                    yield future.result()
                    bar.update()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        bar.close()


# --- the run folder: config, resume, manifest -----------------------------------------------------------

def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file; a torn last line (a kill mid-append) is ignored."""
    records = []
    if not path.exists():
        return records
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise BenchmarkError(f"{path}: not a JSON Lines file (not UTF-8 text)") from None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                log.warning("%s: ignoring a torn last line (interrupted write)", path)
                continue
            raise BenchmarkError(f"{path}: line {i + 1} is not valid JSON")
    return records


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: manifest not found")
    records = _read_jsonl(path)
    if not records or not all(isinstance(r, dict) and _RECORD_KEYS <= r.keys() for r in records):
        raise BenchmarkError(f"{path}: not a benchmark manifest (one JSON record per degraded pair, "
                             f"as `allinone degrade` writes it in {MANIFEST})")
    return records


def _sort_key(record: dict[str, Any]) -> tuple:
    return (record["recipe"], record["level"], record["name"])


def _dump_manifest(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in sorted(records, key=_sort_key)).encode()


def _check_not_inputs(out: Path, cfg: BenchmarkConfig) -> None:
    out = out.resolve()
    for label, folder in (("IR", cfg.ir_dir), ("VIS", cfg.vi_dir)):
        src = Path(folder).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise BenchmarkError(f"output folder {out} overlaps the {label} input folder {src}; "
                                 "choose an --out outside the inputs")


def _clear_previous(out: Path, old: dict[str, Any] | None, cfg: BenchmarkConfig) -> None:
    """Remove what a previous run wrote (only its known files and folders, never anything else)."""
    recipes = set(cfg.recipes) | set((old or {}).get("recipes", []))
    for name in [*recipes, "clean", ".cache"]:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in (MANIFEST, PARTIAL, RUN_FILE, "README.md"):
        (out / name).unlink(missing_ok=True)


def _read_run_file(path: Path) -> dict[str, Any]:
    """The settings a run.json holds; BenchmarkError naming the file when it is not one."""
    try:
        return read_json_object(path, f"a benchmark's {RUN_FILE}")
    except ValueError as exc:
        raise BenchmarkError(str(exc)) from None


def _prepare_out(out: Path, cfg: BenchmarkConfig, overwrite: bool) -> None:
    """Create, resume or (with overwrite) clear the output folder; refuse anything else."""
    run_file = out / RUN_FILE
    if run_file.exists():
        try:
            old = _read_run_file(run_file)
        except BenchmarkError:
            if not overwrite:
                raise
            old = None  # unreadable: --overwrite clears what this run writes (other folders of the old run stay)
        if old == cfg.to_json() and not overwrite:
            # Resume. A kill mid-write leaves a hidden temporary file, never a half image: drop them.
            for stale in out.rglob(".*.tmp"):
                stale.unlink()
            return
        if not overwrite:
            raise BenchmarkError(
                f"{out} holds a different benchmark (see {run_file}); pass --overwrite to replace it, "
                "or choose another --out")
        _clear_previous(out, old, cfg)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BenchmarkError(f"{out} exists and is not empty; pass --overwrite to write into it, "
                                 "or choose another --out")
        _clear_previous(out, None, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(run_file, (json.dumps(cfg.to_json(), indent=2, sort_keys=True) + "\n").encode())


def _finish(out: Path, records: list[dict[str, Any]], cfg: BenchmarkConfig) -> None:
    write_bytes_atomic(out / MANIFEST, _dump_manifest(records))
    write_bytes_atomic(out / "README.md", _readme(cfg, records).encode())
    (out / PARTIAL).unlink(missing_ok=True)


def _readme(cfg: BenchmarkConfig, records: list[dict[str, Any]]) -> str:
    depth = sorted({r["depth_source"] for r in records if r.get("depth_source")})
    return f"""# Degraded IR/VIS benchmark

Generated by `allinone degrade` (format version {cfg.version}).

- Clean sources: IR `{cfg.ir_dir}`, VIS `{cfg.vi_dir}` ({len(cfg.pairs)} pairs); copies as read in `clean/`
  (IR one channel{', IR resized to the VIS size' if cfg.align == 'resize' else ''}).
- Recipes: {', '.join(cfg.recipes)}; levels: {', '.join(map(str, cfg.levels))}; seed: {cfg.seed}.
- Depth for haze: {', '.join(depth) if depth else 'not used'}.
- Layout: `RECIPE/LEVEL/ir/NAME.png` and `RECIPE/LEVEL/vi/NAME.png` ({len(records)} degraded pairs).
- `manifest.jsonl`: one JSON record per degraded pair with every sampled parameter (`steps`), the
  degradation labels and levels, the text prompt, and the SHA-256 of both images.

Regenerate it bit-exact with:

    allinone degrade --replay manifest.jsonl --out OTHER_FOLDER
"""


def check_recipes_and_levels(recipes: Iterable[str], levels: Iterable[int]) -> None:
    """BenchmarkError for an unknown recipe or a severity level outside 1..5."""
    for recipe in recipes:
        if recipe not in recipes_mod.RECIPES:
            raise BenchmarkError(f"unknown recipe {recipe!r}; known: {', '.join(recipes_mod.RECIPES)}")
    for level in levels:
        if not 1 <= level <= 5:
            raise BenchmarkError(f"severity level must be 1..5, got {level}")


def generate(cfg: BenchmarkConfig, out: str | os.PathLike, *, workers: int = 1,
             overwrite: bool = False) -> list[dict[str, Any]]:
    """Generate (or resume) a benchmark; returns the sorted manifest records."""
    out = Path(out)
    check_recipes_and_levels(cfg.recipes, cfg.levels)
    pairs = find_pairs(cfg.ir_dir, cfg.vi_dir)
    if cfg.align != "resize":
        require_same_sizes(pairs)
    cfg.pairs = [p.name for p in pairs]
    _check_not_inputs(out, cfg)
    items = [Item(p, r, lv) for r in cfg.recipes for lv in cfg.levels for p in pairs]
    if any(_plan(it, cfg).needs_depth for it in items):
        depth_estimator(cfg.depth_model)  # here, before any output: a depth model that does not load stops the run
    _prepare_out(out, cfg, overwrite)

    done = {_sort_key(r): r for r in _read_jsonl(out / PARTIAL)}
    if (out / MANIFEST).exists():
        done.update({_sort_key(r): r for r in _read_jsonl(out / MANIFEST)})
    # An item counts as done only if its images are really there.
    done = {k: r for k, r in done.items() if all((out / p).exists() for p in r["outputs"].values())}
    todo = [it for it in items if it.key not in done]
    if done and todo:
        log.info("resuming: %d of %d items already done", len(done), len(items))
    if todo:
        with open(out / PARTIAL, "a") as partial:
            for record in _run_tasks(_generate_item, [(it, cfg, out) for it in todo], workers, "degrading"):
                partial.write(json.dumps(record, sort_keys=True) + "\n")
                partial.flush()
                done[_sort_key(record)] = record
    records = [done[it.key] for it in items]
    _finish(out, records, cfg)
    return sorted(records, key=_sort_key)


def _changed_sources(record: dict[str, Any], pair: Pair, cfg: BenchmarkConfig, benchmark: Path) -> list[Path]:
    """The sources of ``record``'s pair whose pixels, read as the run read them, differ from the clean copies
    in the folder ``benchmark``; a copy that is not there is not checked."""
    import numpy as np
    from PIL import Image

    ir, vi = load_pair(pair, cfg.align, cfg.ir_bits)
    paths = output_paths(record)
    changed = []
    for source, image, copy in ((pair.ir, ir, benchmark / paths["clean_ir"]),
                                (pair.vi, vi, benchmark / paths["clean_vi"])):
        if copy.is_file():
            with Image.open(copy) as kept:
                if not np.array_equal(np.asarray(kept), to_uint8(image)):
                    changed.append(source)
    return changed


def replay(manifest: str | os.PathLike, out: str | os.PathLike, *, ir_dir: str | None = None,
           vi_dir: str | None = None, workers: int = 1, overwrite: bool = False) -> dict[str, Pair]:
    """Regenerate the benchmark of ``manifest`` into ``out``; returns the items whose bytes differ, as
    ``{"RECIPE/LEVEL/NAME": the clean pair it was made from}``.

    Before anything is written, every clean source is compared with the copy that the benchmark folder of
    ``manifest`` keeps in ``clean/``, where there is one: a source that changed is a BenchmarkError naming it.
    Without copies a changed source shows as differing items; ``manifest.jsonl`` and ``README.md`` are written
    only when every image matches, so such a folder never passes for a copy of the benchmark.
    ``ir_dir``/``vi_dir`` point at the clean sources when they moved since the manifest was written.
    """
    manifest = Path(manifest)
    records = read_manifest(manifest)
    run_file = manifest.parent / RUN_FILE
    if not run_file.exists():
        raise BenchmarkError(f"{run_file}: missing (replay needs the run.json next to the manifest)")
    try:
        cfg = BenchmarkConfig(**_read_run_file(run_file))
    except TypeError as exc:  # fields missing or unknown
        raise BenchmarkError(f"{run_file}: not a valid {RUN_FILE} ({exc})") from None
    if ir_dir:
        cfg.ir_dir = ir_dir
    if vi_dir:
        cfg.vi_dir = vi_dir
    out = Path(out)
    if out.resolve() == manifest.parent.resolve():
        raise BenchmarkError("replay must write to another folder than the manifest's")
    _check_not_inputs(out, cfg)

    def source(recorded: str, moved_to: str | None) -> Path:
        return Path(moved_to) / Path(recorded).name if moved_to else Path(recorded)

    pairs: dict[str, Pair] = {}
    for r in records:
        pair = Pair(r["name"], source(r["ir_source"], ir_dir), source(r["vi_source"], vi_dir))
        for path in (pair.ir, pair.vi):
            if not path.exists():
                raise BenchmarkError(f"{path}: clean source of {r['name']} not found; pass --ir/--vi")
        pairs[r["name"]] = pair
    copies = manifest.parent / "clean"
    if copies.is_dir():
        checks = [(r, pairs[r["name"]], cfg, manifest.parent) for r in {r["name"]: r for r in records}.values()]
        changed = sorted(path for paths in _run_tasks(_changed_sources, checks, workers, "checking sources")
                         for path in paths)
        if changed:
            raise BenchmarkError(f"{len(changed)} clean source(s) changed since {manifest} was written (they differ "
                                 f"from the copies in {copies}): {', '.join(map(str, changed))}; restore them, "
                                 "or pass --ir/--vi to point at the original sources")
    if _needs_depth(s["op"] for r in records for s in r["steps"]):
        depth_estimator(cfg.depth_model)  # here, before any output: a depth model that does not load stops the run
    _prepare_out(out, cfg, overwrite)

    mismatched = {}
    expected = {_sort_key(r): r["sha256"] for r in records}
    for result in _run_tasks(_replay_item, [(r, pairs[r["name"]], cfg, out) for r in records], workers, "replaying"):
        if result["sha256"] != expected[result["key"]]:
            mismatched["/".join(map(str, result["key"]))] = pairs[result["key"][2]]
    if not mismatched:
        _finish(out, records, cfg)
    return dict(sorted(mismatched.items()))
