"""The processes of a run: accelerate's process state, shared by the stages and the command
line, one process without a launcher."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch

__all__ = ["WAIT", "processes"]

#: How long the processes of a multi-process run wait for each other (the process group's
#: timeout): the main process alone prepares the run, image cache included, and evaluates.
WAIT = timedelta(hours=4)


def processes() -> Any:
    """accelerate's ``PartialState``: this process's index, device and the others (one process
    without a launcher). The first call in a process sets up the process group, waiting up
    to :data:`WAIT` at each barrier."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)
