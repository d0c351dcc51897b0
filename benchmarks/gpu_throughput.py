"""GPU benchmark: 200 training steps at 224 px, bf16, batch 64: TRCGL-Net vs linear head.

One command on a machine with a CUDA GPU:

    HF_HUB_OFFLINE=1 python benchmarks/gpu_throughput.py [--backbone convnextv2_tiny]

Each model trains ``--steps`` steps (after ``--warmup``) on random tensors already on the GPU,
with AdamW under ``torch.autocast(dtype=torch.bfloat16)``, so that the number measures the
model, not the data loader. Prints images/s for both and the ratio, and writes
``benchmarks/results/gpu_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_throughput.json"
CLASSES = [f"class{i}" for i in range(30)]


def build(kind: str, backbone: str) -> torch.nn.Module:
    from trcgl.labels.graph import LabelGraph
    from trcgl.models.baselines import TimmClassifier
    from trcgl.models.trcgl_net import TRCGLNet

    torch.manual_seed(0)
    if kind == "linear":
        return TimmClassifier(classes=CLASSES, backbone=backbone, pretrained=None)
    y = np.random.default_rng(0).random((5000, len(CLASSES))) < 0.1
    graph = LabelGraph.from_labels(y, CLASSES)
    return TRCGLNet(classes=CLASSES, backbone=backbone, pretrained=None, graph=graph)


def throughput(kind: str, backbone: str, steps: int, warmup: int, batch: int, size: int) -> dict:
    model = build(kind, backbone).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device="cuda")
    y = (torch.rand(batch, len(CLASSES), device="cuda") < 0.1).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x)["logits"].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "images_per_s": steps * batch / seconds,
        "seconds": seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="convnextv2_tiny")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: this benchmark needs one")
    torch.backends.cudnn.benchmark = True
    out = {}
    for kind in ("linear", "trcgl", "linear", "trcgl"):  # alternate, keep the second of each
        out[kind] = throughput(kind, args.backbone, args.steps, args.warmup, args.batch, args.size)
        print(kind, out[kind], flush=True)
    ratio = out["trcgl"]["images_per_s"] / out["linear"]["images_per_s"]
    print(
        f"{args.backbone} {args.size}px bf16 batch {args.batch}: linear head "
        f"{out['linear']['images_per_s']:.0f} img/s, TRCGL-Net {out['trcgl']['images_per_s']:.0f} "
        f"img/s (×{ratio:.3f})"
    )
    payload = {
        **vars(args),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "results": out,
        "ratio_trcgl_over_linear": ratio,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
