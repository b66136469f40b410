"""Reading the next item and writing the last result in a second thread while this one does the work.

For runs over many image pairs (``allinone fuse`` on folders, ``allinone demo``): decoding an image and
compressing a PNG run in C and release the GIL, so one background thread can do both while the network runs
here, instead of between two items. Items are loaded, worked on and saved in order; an item that fails to
load or save stops the run with its error, after the results before it are saved (each save is whole or
absent when ``save`` writes atomically), and nothing after it is saved.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence, TypeVar

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
Result = TypeVar("Result")


def run_with_background_io(
    items: Sequence[Item],
    load: Callable[[Item], Loaded],
    work: Callable[[Item, Loaded], Result],
    save: Callable[[Item, Result], object],
    progress: Callable[[Sequence[Item]], Iterable[Item]] = iter,
) -> None:
    """``save(item, work(item, load(item)))`` for each item in order, ``load`` and ``save`` in a background thread.

    ``load`` of item i + 1 and ``save`` of item i - 1 overlap ``work`` on item i. ``progress`` wraps the
    iteration over ``items`` (e.g. a tqdm bar); it advances as each item's work is done.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="allinone-io") as io_thread:
        next_load = io_thread.submit(load, items[0]) if items else None
        last_save = None
        for index, item in enumerate(progress(items)):
            loaded = next_load.result()
            if index + 1 < len(items):
                next_load = io_thread.submit(load, items[index + 1])
            result = work(item, loaded)
            if last_save is not None:
                last_save.result()  # a failed save stops the run here
            last_save = io_thread.submit(save, item, result)
        if last_save is not None:
            last_save.result()
