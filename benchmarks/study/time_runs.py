"""Time a training preset per model and extrapolate one full run: sizes the study presets.

Trains each model for a few batches with the given preset (one short epoch), validates and tests on
a few images, then extrapolates to the preset's full schedule::

    full = epochs * batches_per_epoch * t_batch + epochs * n_val * t_val_image + n_test * t_test_image

(t_test_image includes the preset's TTA views x kept epochs). Prints and writes a JSON table.

    python -m benchmarks.study.time_runs --preset paper --models retina_unet retina_net --out timing.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def time_model(preset_name: str, dim: int, model: str, batches: int, n_eval: int, data_root: str) -> dict:
    from retina_unet.pipeline import train_and_evaluate
    from retina_unet.training import preset

    full = preset(preset_name, dim, model=model)
    top_k = min(full.top_k, 1)
    cfg = full.replace(epochs=1, batches_per_epoch=batches, val_subset=n_eval, test_subset=n_eval, top_k=top_k)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_and_evaluate(cfg, Path(tmp) / "run", data_root=data_root, progress=False, resume=False)
        wall = time.perf_counter() - t0
    epoch = res["curve"][0]
    t_batch = epoch["train_s"] / batches
    t_val = epoch["val_s"] / n_eval
    # measured test time used 1 kept epoch; the full run ensembles min(top_k, epochs) of them
    t_test = res["test"]["inference_s"] / n_eval * min(full.top_k, full.epochs) / top_k
    n_val = full.val_subset or full.pool_val
    n_test = full.test_subset or full.pool_test
    est = full.epochs * full.batches_per_epoch * t_batch + full.epochs * n_val * t_val + n_test * t_test
    return {"preset": preset_name, "dim": dim, "model": model, "t_batch_s": t_batch, "t_val_image_s": t_val,
            "t_test_image_s": t_test, "measured_wall_s": wall, "estimated_full_run_s": est,
            "schedule": {"epochs": full.epochs, "batches_per_epoch": full.batches_per_epoch,
                         "batch_size": full.batch_size, "n_val": n_val, "n_test": n_test, "top_k": full.top_k},
            "gpu": res["environment"].get("gpu"), "torch_threads": res["environment"].get("torch_threads")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["retina_unet", "retina_net"])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--n-eval", type=int, default=40)
    ap.add_argument("--data-root", default="data/cache")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for m in args.models:
        try:
            row = time_model(args.preset, args.dim, m, args.batches, args.n_eval, args.data_root)
        except Exception as exc:  # a model that does not build yet: say so, time the others
            row = {"preset": args.preset, "model": m, "error": f"{type(exc).__name__}: {exc}"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
