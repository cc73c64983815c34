"""Where this process stands among those ``accelerate launch`` or ``torchrun`` started."""

from __future__ import annotations

import gc

import torch
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env


def process_state() -> PartialState:
    """This process's place among the launched ones (rank, count, device).

    accelerate only sees several processes on the CPU when asked for the CPU, so it is asked whenever
    there is no accelerator (or ``ACCELERATE_USE_CPU`` is set). Create it before any other
    `PartialState`: the first one made fixes the state of the process.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.accelerator.is_available())


def end_process_group() -> None:
    """Destroy the default process group, if there is one, and let its worker threads end.

    Call it once the trainer is gone (at the end of ``main``): a DDP-wrapped model keeps the group,
    and its gloo threads, alive. A launched process that exits with those threads running can abort
    (SIGABRT) after all its work is done, which fails the launch.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    gc.collect()  # a trainer in a reference cycle still holds the group until it is collected
