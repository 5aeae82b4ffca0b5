"""A short GPU training run of Retina U-Net 2D (paper preset) on donuts_shape, n_train = 1000.

Prints and writes (``--out``/gpu_train.json) training images per second, the validation mAP per
epoch, the test mAP on a test subset, and the wall time. Meant for the GPU check (a few minutes),
not for the published numbers: the paper trains 24 epochs x 100 batches.

    python benchmarks/gpu_train_check.py --out OUT [--epochs 3 --batches 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="retina_unet")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batches", type=int, default=60, help="batches per epoch")
    p.add_argument("--val-subset", type=int, default=100)
    p.add_argument("--test-subset", type=int, default=200)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    from retina_unet.pipeline import train_and_evaluate
    from retina_unet.training import preset

    cfg = preset("paper", 2, model=args.model, task="donuts_shape", n_train=1000, seed=0, epochs=args.epochs,
                 batches_per_epoch=args.batches, val_subset=args.val_subset, test_subset=args.test_subset,
                 top_k=min(args.epochs, 5))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_and_evaluate(cfg, Path(tmp) / "run", data_root=Path(tmp) / "data", progress=False)
    wall = time.perf_counter() - t0
    curve = result["curve"]
    images = cfg.batch_size * cfg.batches_per_epoch * len(curve)
    train_s = sum(e["train_s"] for e in curve)
    summary = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "model": args.model,
        "preset": "paper",
        "epochs": len(curve),
        "batches_per_epoch": cfg.batches_per_epoch,
        "batch_size": cfg.batch_size,
        "train_images_per_s": images / train_s,
        "val_mAP_per_epoch": [e["val_mAP"] for e in curve],
        "test_mAP": result["mAP"],
        "test_subset": args.test_subset,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "wall_s": wall,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_train.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
