"""The command line's output where it is read most on a cluster: a log file, not a terminal."""

from __future__ import annotations

import os
import subprocess
import sys

TABLE = """
from rich.table import Table
from trcgl.cli import console
table = Table(title="Table 3: ablation")
for name in ("method", "diffusion", "channel-class attention", "label relation",
             "spatial branch", "mAP", "mAUC", "F1", "tail mAP", "tail mAUC", "mAP 95 % CI"):
    table.add_column(name)
table.add_row("××× (authors' reading)", "✗", "✗", "✗", "✓", "0.1783", "0.6227", "0.0104",
              "0.1161", "0.6352", "[0.1586, 0.2274]")
console.print(table)
"""


def _piped(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", TABLE], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout


def test_tables_print_whole_rows_into_a_log_file():
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    text = _piped(env)
    assert "…" not in text  # rich's 80 columns would crop every cell to "0.1…"
    row = next(line for line in text.splitlines() if "authors' reading" in line)
    for cell in ("0.1783", "0.6227", "0.6352", "[0.1586, 0.2274]", "channel-class attention"):
        assert cell in row or cell in text
    # COLUMNS, where the user sets it, still decides the width.
    assert "…" in _piped({**env, "COLUMNS": "60"})


def test_the_command_line_module_imports_no_torch():
    """The image cache's worker processes import the program's main module again (forkserver and
    spawn): for ``trcgl`` that is :mod:`trcgl.cli`, which must stay light."""
    heavy = ("torch", "timm", "albumentations")
    code = f"import sys, trcgl.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
