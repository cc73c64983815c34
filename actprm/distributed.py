"""Where this process stands among those ``accelerate launch`` or ``torchrun`` started."""

from __future__ import annotations

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
