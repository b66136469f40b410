"""Running part of a model's work in a second thread, as the calling thread would run it.

On a CPU, two threads that each run whole operations beat two threads that share every operation (the
thread pool of each operation waits for its slowest thread; docs/BENCHMARKS.md, speed section). Autograd's
grad mode and inference mode are per thread, so the work submitted here runs under the caller's.
"""
from __future__ import annotations

from concurrent.futures import Executor, Future
from typing import Callable, TypeVar

import torch

Result = TypeVar("Result")


def submit_in_callers_mode(executor: Executor, function: Callable[[], Result]) -> Future[Result]:
    """``executor.submit(function)``, run under the calling thread's grad and inference modes."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run() -> Result:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return function()

    return executor.submit(run)
