"""The report in a real headless Chromium: no console errors, nothing fetched, every image
decoded, tables and figures on the page (``scripts/check_report.py`` does the same check)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trcgl.stages.evaluate import evaluate_run
from trcgl.stages.report import write_report

ROOT = Path(__file__).resolve().parents[2]


def _load_check_script():
    """``scripts/check_report.py`` as a module (registered: its dataclass needs that)."""
    name = "trcgl_scripts_check_report"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "check_report.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


check = _load_check_script()


@pytest.fixture(scope="module")
def browser() -> None:
    why = check.browser_unavailable()
    if why:
        pytest.skip(f"no headless browser for this check: {why}")


def _add_synthetic(run: Path) -> None:
    """Minimal stand-ins for the diffusion stage's outputs (see test_report.py)."""
    (run / "diffusion").mkdir()
    (run / "synthetic").mkdir()
    generator = {"loss_before": 0.2, "loss_after": 0.1, "steps": 3, "seconds_per_step": 1.0}
    (run / "diffusion" / "train.json").write_text(json.dumps({**generator, "unet_mode": "lora"}))
    lines = [json.dumps({"step": i, "loss": 0.2 - 0.03 * i}) for i in range(4)]
    (run / "diffusion" / "loss.jsonl").write_text("\n".join(lines) + "\n")
    counts = {"planned": 2, "made": 2, "kept": 1, "near_copy": 1, "low_probability": 0}
    summary = {"planned": 2, "made": 2, "kept": 1, "rejected": {"near_copy": 1}}
    (run / "synthetic" / "summary.json").write_text(
        json.dumps({**summary, "w_syn": 0.5, "per_class": {"Nodule": counts}})
    )
    grid = (np.random.default_rng(0).random((48, 96)) * 255).astype(np.uint8)
    Image.fromarray(grid).save(run / "synthetic" / "samples.png")


def test_report_loads_cleanly_in_headless_chromium(browser, trained_run, tmp_path):
    run, _ = trained_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    evaluate_run(copy, split="val")
    _add_synthetic(copy)
    report = write_report(copy, explain_images=1)
    shot = tmp_path / "report.png"

    result = check.check_in_browser(report, shot)

    assert result.console_errors == []
    assert result.page_errors == []
    assert result.external_requests == []
    # Fig. 2, generator loss, Fig. 3, training curve, reliability, PR curves, Fig. 4, Fig. 5.
    assert len(result.images) == 8
    assert all(width > 0 for _, width in result.images), result.images
    for heading in (
        "Configuration",
        "Data statistics",
        "Synthetic samples",
        "Training",
        "Metrics overall and per group",
        "Per-class metrics",
        "Precision–recall curves",
        "Decision regions and confidences (Fig. 4, Fig. 5)",
    ):
        assert heading in result.headings
    for table in ("label-stats", "synthetic-per-class", "metrics-summary", "per-class"):
        assert table in result.table_ids
    assert result.page_height > result.viewport_height
    with Image.open(shot) as img:
        assert img.format == "PNG"
        assert img.height > result.viewport_height and img.height >= result.page_height - 1


def test_the_check_sees_errors_and_outside_requests(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<!DOCTYPE html><html><body><img alt="remote" src="https://example.invalid/x.png">'
        '<script>console.error("boom"); throw new Error("bad");</script></body></html>'
    )
    result = check.check_in_browser(page, tmp_path / "bad.png")
    assert "https://example.invalid/x.png" in result.external_requests
    assert any("boom" in m for m in result.console_errors)
    assert any("bad" in m for m in result.page_errors)
    assert result.broken_images == ["remote"]
