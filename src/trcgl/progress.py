"""One style of progress bar for long work (training epochs, generator steps, sampling)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def progress_bar(label: str, *extra: TextColumn, transient: bool = False) -> Progress | None:
    """A rich bar ``label | bar | n/N | extra… | time left``; ``None`` when the output is not
    a terminal (a bar in a log file or pipe leaves only blank lines)."""
    if not Console().is_terminal:
        return None
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeRemainingColumn(),
        transient=transient,
    )
