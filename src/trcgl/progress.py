"""Progress on long work (image cache, classifier epochs, generator steps, sampling).

On a terminal a rich bar; anywhere else (a scheduler's log file, ``| tee``, CI) plain lines,
flushed as they are written, because a bar there prints nothing for minutes and then blank
lines. :func:`progress` gives one object for both; :func:`say` writes one plain line;
:func:`runtime_line` says where the work runs (device, precision, processes) and warns when a
CUDA build of PyTorch finds no GPU.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

#: Plain-text progress lines per task when the output is not a terminal (about one per 5 %).
LINES_PER_TASK = 20


def is_terminal() -> bool:
    return Console().is_terminal


def say(line: str) -> None:
    """One plain line on standard output, flushed (shown at once in a log file)."""
    print(line, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Reporter:
    """``update(done, **fields)`` and ``close()`` for one task of ``total`` units."""

    def __init__(
        self, label: str, total: int, start: int = 0, unit: str = "", every: int | None = None
    ) -> None:
        self.label, self.total, self.start, self.unit = label, total, start, unit
        self.every = every or max(1, -(-max(total - start, 1) // LINES_PER_TASK))
        self.done = start
        self._t0 = time.perf_counter()
        self._last_line = start
        self._bar: Progress | None = None
        if is_terminal():
            self._bar = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"),
                TimeRemainingColumn(),
                transient=True,
            )
            self._task = self._bar.add_task(label, total=total, completed=start, extra="")
            self._bar.start()

    def update(self, done: int, **fields: Any) -> None:
        self.done = done
        extra = ", ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=done, extra=extra)
            return
        if done - self._last_line >= self.every or done >= self.total:
            self._last_line = done
            say(self._line(extra))

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.update(self.done + n, **fields)

    def _line(self, extra: str) -> str:
        elapsed = time.perf_counter() - self._t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        pct = 100.0 * self.done / self.total if self.total else 100.0
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.label}: {self.done:,}/{self.total:,}{unit} ({pct:.0f} %)"]
        if extra:
            parts.append(extra)
        parts.append(f"{_duration(elapsed)} elapsed")
        if left is not None and self.done < self.total:
            parts.append(f"about {_duration(left)} left")
        return ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _Silent(Reporter):
    def __init__(self) -> None:
        self.done = 0

    def update(self, done: int, **fields: Any) -> None:
        self.done = done

    def close(self) -> None:
        pass


def progress(
    label: str,
    total: int,
    *,
    start: int = 0,
    unit: str = "",
    every: int | None = None,
    enabled: bool = True,
) -> Reporter:
    """A :class:`Reporter`: a bar on a terminal, else a plain line every ``every`` units
    (default: about :data:`LINES_PER_TASK` lines in all) and at the end; silent when not
    ``enabled`` or when nothing is left to do."""
    if not enabled or total <= start:
        return _Silent()
    return Reporter(label, total, start, unit, every)


def progress_bar(label: str, *extra: TextColumn, transient: bool = False) -> Progress | None:
    """A rich bar ``label | bar | n/N | extra… | time left`` for work that also prints its own
    plain lines (e.g. the steps inside one sampling chunk); ``None`` off a terminal."""
    if not is_terminal():
        return None
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeRemainingColumn(),
        transient=transient,
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def cuda_fallback_warning() -> str | None:
    """A warning when this PyTorch is a CUDA build but finds no GPU (the work runs on the CPU,
    often by mistake on a cluster node without a GPU or with a driver mismatch)."""
    import torch

    if torch.version.cuda and not torch.cuda.is_available():
        return (
            f"warning: this PyTorch is a CUDA {torch.version.cuda} build but finds no GPU; "
            "running on the CPU (check CUDA_VISIBLE_DEVICES and the driver, or install a "
            "CPU-only PyTorch on machines without a GPU)"
        )
    return None


_warned: set[str] = set()


def runtime_line(what: str, device: Any, precision: str, processes: int = 1) -> str:
    """``"classifier: device cpu, precision no, 1 process"``, followed (once per process) by
    the warning of :func:`cuda_fallback_warning` when the work runs on the CPU."""
    line = (
        f"{what}: device {device}, precision {precision}, "
        f"{processes} process{'es' if processes != 1 else ''}"
    )
    warning = cuda_fallback_warning() if str(device).startswith("cpu") else None
    if warning is None or warning in _warned:
        return line
    _warned.add(warning)
    return f"{line}\n{warning}"
