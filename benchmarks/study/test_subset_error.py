"""Is a smaller test set good enough? The test-set sampling error of an n-image mAP next to the
seed-to-seed spread of the runs.

For each run directory (its stored ``test_predictions.pt`` over the whole test split), the bootstrap
over test images (:func:`retina_unet.evaluation.bootstrap_map`) gives the standard deviation of the
mAP of ``n`` images; the seed-to-seed standard deviation comes from a study's ``results.csv`` (runs
of one cell differing only in their seed). Prints a markdown table and writes JSON::

    python -m benchmarks.study.test_subset_error RUN [RUN ...] --sizes 100 250 500 1000 \
        --results-csv reports/quick/results.csv --out reports/study_speed/test_subset_error.json \
        --markdown reports/study_speed/test_subset_error.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def run_errors(run: Path, sizes: list[int], reps: int, seed: int) -> dict:
    from retina_unet.evaluation import bootstrap_map, evaluate_detections
    from retina_unet.rundir import RunDir

    stored = RunDir(run).stored_predictions()
    if stored is None:
        raise SystemExit(f"run: {run} has no stored test predictions (test_predictions.pt)")
    preds, targets, c = stored["predictions"], stored["targets"], stored["num_classes"]
    full = evaluate_detections(preds, targets, c)["mAP"]
    boot = bootstrap_map(preds, targets, c, [n for n in sizes if n <= len(preds)], reps=reps, seed=seed)
    return {"run": str(run), "n_images": len(preds), "mAP_all": full, "bootstrap": boot}


def seed_spread(results_csv: Path) -> dict:
    """Per (task, model, n_train) cell with >= 2 seeds: the SD of the test mAP over seeds."""
    import pandas as pd

    df = pd.read_csv(results_csv)
    cells = df.groupby(["task", "model", "n_train"])["map"]
    sds = cells.std(ddof=1)[cells.count() >= 2]
    return {"cells": int(sds.size), "median_sd": float(np.median(sds)) if sds.size else None,
            "min_sd": float(sds.min()) if sds.size else None, "max_sd": float(sds.max()) if sds.size else None}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories with test_predictions.pt")
    ap.add_argument("--sizes", nargs="+", type=int, default=[100, 250, 500, 1000])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results-csv", type=Path, default=None, help="a study's results.csv (seed-to-seed SD)")
    ap.add_argument("--out", type=Path, default=None, help="JSON with every figure")
    ap.add_argument("--markdown", type=Path, default=None, help="the table as a markdown file")
    args = ap.parse_args(argv)
    rows = [run_errors(r, args.sizes, args.reps, args.seed) for r in args.runs]
    spread = seed_spread(args.results_csv) if args.results_csv else None
    lines = ["| run | test mAP (all images) | " + " | ".join(f"SD at n={n}" for n in args.sizes) + " |",
             "|---|---|" + "---|" * len(args.sizes)]
    for r in rows:
        cells = [f"{r['bootstrap'][n]['sd']:.4f}" if n in r["bootstrap"] else "" for n in args.sizes]
        lines.append(f"| {Path(r['run']).name} | {r['mAP_all']:.3f} | " + " | ".join(cells) + " |")
    if spread:
        lines.append(f"\nSeed-to-seed SD of the test mAP ({args.results_csv}, {spread['cells']} cells with >= 2 "
                     f"seeds): median {spread['median_sd']:.4f}, range {spread['min_sd']:.4f}-{spread['max_sd']:.4f}.")
    print("\n".join(lines), flush=True)
    from retina_unet.atomic_io import write_json_atomic, write_text_atomic

    if args.markdown:
        write_text_atomic(args.markdown, "\n".join(lines) + "\n")
    if args.out:
        write_json_atomic(args.out, {"runs": rows, "seed_spread": spread, "sizes": args.sizes, "reps": args.reps,
                   "seed": args.seed, "results_csv": str(args.results_csv) if args.results_csv else None})


if __name__ == "__main__":
    main()
