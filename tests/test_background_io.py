"""run_with_background_io: order, which thread does what, and how a failure stops the run."""
import threading

import pytest

from allinone.background_io import run_with_background_io


def test_items_are_loaded_worked_and_saved_in_order_with_io_in_another_thread():
    main, log, saved = threading.get_ident(), [], []

    def load(item):
        log.append(("load", item, threading.get_ident() != main))
        return item * 10

    def work(item, loaded):
        log.append(("work", item, threading.get_ident() != main))
        return loaded + 1

    def save(item, result):
        log.append(("save", item, threading.get_ident() != main))
        saved.append((item, result))

    run_with_background_io([1, 2, 3], load, work, save)
    assert saved == [(1, 11), (2, 21), (3, 31)]
    assert {(step, background) for step, _, background in log} == {("load", True), ("work", False), ("save", True)}
    for step in ("load", "work", "save"):
        assert [item for s, item, _ in log if s == step] == [1, 2, 3]
    run_with_background_io([], load, work, save)  # nothing to do is fine
    assert len(saved) == 3


def test_a_failed_load_stops_the_run_after_the_results_before_it_are_saved():
    saved = []

    def load(item):
        if item == "bad":
            raise ValueError("cannot read bad")
        return item

    with pytest.raises(ValueError, match="cannot read bad"):
        run_with_background_io(["a", "b", "bad", "c"], load, lambda item, loaded: loaded.upper(),
                               lambda item, result: saved.append(result))
    assert saved == ["A", "B"]


def test_a_failed_save_stops_the_run():
    worked = []

    def save(item, result):
        if item == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_with_background_io([1, 2, 3, 4], lambda item: item, lambda item, loaded: worked.append(item), save)
    assert worked[-1] <= 3  # the run stops at the next item at the latest
