"""Benchmark: TRCGL-Net's cost over the same backbone with a linear head.

For ``convnextv2_atto`` and ``convnextv2_nano`` at 224 px, batch 16, on this machine's device:

* **train step**: forward + BCE + backward + AdamW step, median seconds over ``--steps`` steps
  after ``--warmup``; TRCGL-Net (channel reweighting, class spatial attention, label GCN over
  a 15-class graph) vs :class:`~trcgl.models.baselines.TimmClassifier` (timm's own head);
* **peak memory**: on CPU the peak resident set of a fresh process that only builds the model
  and runs the steps (``ru_maxrss``); on GPU ``torch.cuda.max_memory_allocated``;
* **inference**: images/s in eval mode, batch 32.

Each (backbone, model) pair runs in its own subprocess, linear and TRCGL-Net alternating, twice;
the medians of both repeats are compared as ratios (TRCGL-Net / linear; goal ≤ 1.05 for the
train step). Results go to ``benchmarks/results/model.json``.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_model.py``
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "model.json"
CLASSES = [f"class{i}" for i in range(15)]


def build(kind: str, backbone: str):
    from trcgl.labels.graph import LabelGraph
    from trcgl.models.baselines import TimmClassifier
    from trcgl.models.trcgl_net import TRCGLNet

    torch.manual_seed(0)
    if kind == "linear":
        return TimmClassifier(classes=CLASSES, backbone=backbone, pretrained=None)
    y = np.random.default_rng(0).random((1000, 15)) < 0.1
    graph = LabelGraph.from_labels(y, CLASSES)
    return TRCGLNet(classes=CLASSES, backbone=backbone, pretrained=None, graph=graph)


def worker(kind: str, backbone: str, size: int, batch: int, steps: int, warmup: int) -> dict:
    """One measurement, in a fresh process."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build(kind, backbone).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = (torch.rand(batch, len(CLASSES), device=device) < 0.2).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    times = []
    model.train()
    for i in range(warmup + steps):
        sync()
        t = time.perf_counter()
        loss = loss_fn(model(x)["logits"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    model.eval()
    xi = torch.randn(32, 3, size, size, device=device)
    infer = []
    with torch.no_grad():
        for i in range(2 + max(3, steps // 2)):
            sync()
            t = time.perf_counter()
            model(xi)
            sync()
            if i >= 2:
                infer.append(time.perf_counter() - t)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "step_s": statistics.median(times),
        "peak_mb": peak,
        "infer_img_s": 32 / statistics.median(infer),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "device": device,
    }


def run_worker(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "BACKBONE"))
    ap.add_argument("--backbones", nargs="+", default=["convnextv2_atto", "convnextv2_nano"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.worker:
        kind, backbone = args.worker
        print(json.dumps(worker(kind, backbone, args.size, args.batch, args.steps, args.warmup)))
        return
    common = [
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    results = {}
    for backbone in args.backbones:
        runs: dict[str, list[dict]] = {"linear": [], "trcgl": []}
        for _ in range(args.repeats):
            for kind in ("linear", "trcgl"):
                runs[kind].append(run_worker(kind, backbone, *common))
                print(backbone, kind, runs[kind][-1], flush=True)
        med = {
            kind: {
                k: statistics.median(r[k] for r in rs) for k in ("step_s", "peak_mb", "infer_img_s")
            }
            | {"params_m": rs[0]["params_m"]}
            for kind, rs in runs.items()
        }
        results[backbone] = {
            **med,
            "ratio_step_time": med["trcgl"]["step_s"] / med["linear"]["step_s"],
            "ratio_peak_memory": med["trcgl"]["peak_mb"] / med["linear"]["peak_mb"],
            "ratio_inference_throughput": med["trcgl"]["infer_img_s"]
            / med["linear"]["infer_img_s"],
            "runs": runs,
        }
        r = results[backbone]
        print(
            f"{backbone}: step {med['linear']['step_s']:.3f}s → {med['trcgl']['step_s']:.3f}s "
            f"(×{r['ratio_step_time']:.3f}), peak {med['linear']['peak_mb']:.0f} → "
            f"{med['trcgl']['peak_mb']:.0f} MB (×{r['ratio_peak_memory']:.3f}), inference "
            f"{med['linear']['infer_img_s']:.1f} → {med['trcgl']['infer_img_s']:.1f} img/s",
            flush=True,
        )
    payload = {
        "benchmark": "TRCGL-Net vs linear head: train step, peak memory, inference",
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
