"""Writing a benchmark's result: the machine and versions it ran on, the date, the JSON file."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import trcgl


def save(result: dict[str, Any], out: Path, **versions: str) -> None:
    """Add ``machine`` (platform, CPUs, Python, trcgl and ``versions``) and ``date`` to
    ``result``, write it to ``out`` and print it."""
    result["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        "trcgl": trcgl.__version__,
    }
    result["date"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
