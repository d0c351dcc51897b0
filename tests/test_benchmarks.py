"""The GPU check and the full-size dry run, in their ``--dry`` modes (tiny sizes, CPU): the
scripts a GPU user runs cannot rot between the times someone has a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run(script: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--dry", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def test_gpu_check_dry(tmp_path):
    out = tmp_path / "gpu.json"
    _run("gpu_check.py", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["dry"] and result["device"] == "cpu"
    rows = result["classifier"]["convnextv2_atto"]
    assert rows["trcgl-net"]["images_per_s"] > 0 and rows["ratio"] > 0
    assert set(result["generator_lora"]) == {"plain", "gradient checkpointing"}
    assert all(r["steps_per_s"] > 0 for r in result["generator_lora"].values())
    assert result["sampling"]["trcgl"]["images_per_s"] > 0
    assert result["sampling"]["diffusers"]["images_per_s"] > 0


def test_fullsize_dry_run(tmp_path):
    out = tmp_path / "fullsize.json"
    only = ["lora", "lora + bf16 + checkpointing", "sampling", "classifier 224 px"]
    _run("bench_fullsize.py", "--out", str(out), "--base", str(tmp_path / "sd"), "--only", *only)
    result = json.loads(out.read_text())
    configurations = result["configurations"]
    assert list(configurations) == only
    assert not [name for name, row in configurations.items() if "error" in row]
    lora = configurations["lora"]
    assert lora["seconds_per_step"] > 0 and lora["peak_rss_gb"] > 0
    assert lora["generator_folder_mb"] < 0.05 * lora["base_model_mb"]  # no copy of the base
    ratio = "lora: bf16 + checkpointing / plain peak memory"
    assert ratio in result["ratios"] and ratio in result["ratios_whole_process"]
    held = configurations["lora + bf16 + checkpointing"]
    assert held["mixed_precision"] == "bf16"
    assert held["unet_weights"] == ["torch.bfloat16", "torch.float32"]  # base, LoRA
