"""CLI commands ``predict``, ``export-toy`` and ``overlays`` (registered in :mod:`retina_unet.cli`)."""

from __future__ import annotations

import argparse
import json
import sys

from retina_unet.predict.conventions import CONVENTIONS


def add_predict_subcommand(sub) -> None:
    conventions = "; ".join(f"{k}: {c.doc}" for k, c in CONVENTIONS.items())
    p = sub.add_parser(
        "predict",
        help="run a trained run / checkpoint on a folder of .npy images; write detections.csv/.json",
        description="Detections per box (image, class, score, box in our convention and in --convention) "
        "for every .npy in INPUT_DIR, validated against the checkpoint first. A ground_truth.json in "
        "INPUT_DIR (see `export-toy`) adds evaluation.json and ground truth in the overlays.",
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT_OR_RUN_DIR",
        help="run directory (top-k ensemble + merge, as `evaluate`) or one epoch_*.pt / last.pt",
    )
    p.add_argument(
        "input_dir",
        metavar="INPUT_DIR",
        help="folder of .npy files: (H, W) / (C, H, W) or (D, H, W) / (C, D, H, W)",
    )
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument(
        "--convention",
        default="xyxy",
        metavar="NAME",
        help=f"box convention of the extra columns (default xyxy). {conventions}",
    )
    p.add_argument(
        "--overlays",
        action="store_true",
        help="also write overlays/<image>.png (and best_worst.png with ground truth)",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="keep boxes with score > this (default: the run's score_threshold, 0.1)",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirroring test-time augmentation (default: the run's setting)",
    )
    p.add_argument(
        "--intensity-scale",
        type=float,
        default=1.0,
        metavar="S",
        help="multiply every input by S first (default 1). Inputs must be on the training intensity "
        "scale (toy models: 0..1.2); e.g. 8-bit images: 0.00392157 (1/255)",
    )
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: the run's)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from retina_unet.predict.pipeline import predict_folder

    try:
        s = _predict(predict_folder, args)
    except KeyboardInterrupt:
        # atomic_dir removed the half-written temporary folder; --out is as it was before.
        print(f"\ninterrupted: nothing was written to {args.out} (it is written only when complete); "
              "rerun the same command to predict again", file=sys.stderr)
        return 130
    st = s["settings"]
    print(
        f"{s['n_detections']} detections (score > {st['score_threshold']:g}) in {s['n_images']} images; "
        f"{s['model']} {s['spatial_dims']}D, {st['n_members']} members, merge {st['merge']}, {s['wall_s']:.1f}s"
    )
    if "evaluation" in s:
        print("evaluation of the written detections:", json.dumps(s["evaluation"]))
    print(f"wrote {s['out']}/detections.csv, detections.json" + (", overlays/" if args.overlays else ""))
    return 0


def _predict(predict_folder, args) -> dict:
    return predict_folder(
        args.checkpoint,
        args.input_dir,
        args.out,
        convention=args.convention,
        overlays=args.overlays,
        score_threshold=args.score_threshold,
        tta=args.tta,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
        intensity_scale=args.intensity_scale,
    )


def add_export_toy_subcommand(sub) -> None:
    p = sub.add_parser(
        "export-toy",
        help="write a run's toy test images as .npy files + ground_truth.json (input for `predict`)",
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT_OR_RUN_DIR", help="the run whose task, dims and data seed to use"
    )
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--n", type=int, default=20, help="the first n images of the split (default 20)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="which toy split (default test)")
    p.add_argument(
        "--data-root", default=None, help="toy dataset cache (default: $RETINA_UNET_DATA or data/cache)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument(
        "--uint8",
        action="store_true",
        help="store 8-bit images (0..255 = 0..1.2 for the toys) to try `predict --intensity-scale`",
    )
    p.set_defaults(func=cmd_export_toy)


def cmd_export_toy(args) -> int:
    from retina_unet.predict.inputs import export_toy_inputs
    from retina_unet.rundir import run_config

    cfg = run_config(args.checkpoint)
    out = export_toy_inputs(cfg, args.out, args.n, args.split, args.data_root, args.overwrite, args.uint8)
    n = len(list(out.glob("*.npy")))
    print(f"wrote {n} {cfg.task} {cfg.spatial_dims}D {args.split} images and ground_truth.json to {out}")
    return 0


def add_overlays_subcommand(sub) -> None:
    p = sub.add_parser(
        "overlays",
        help="best / worst cases of a run on its toy test set as an overlay grid (best_worst.png)",
    )
    p.add_argument("checkpoint", metavar="RUN_DIR", help="run directory (or one checkpoint file)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--n", type=int, default=4, help="cases per row (default 4)")
    p.add_argument(
        "--images", type=int, default=100, help="rank the first this many images of the split (default 100)"
    )
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="which toy split (default test)")
    p.add_argument(
        "--data-root", default=None, help="toy dataset cache (default: $RETINA_UNET_DATA or data/cache)"
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirroring test-time augmentation (default: the run's setting)",
    )
    p.add_argument("--device", default=None, help="cpu | cuda | auto (default: the run's)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_overlays)


def cmd_overlays(args) -> int:
    from retina_unet.predict.overlays import run_overlays

    s = run_overlays(
        args.checkpoint,
        args.out,
        n=args.n,
        images=args.images,
        split=args.split,
        data_root=args.data_root,
        tta=args.tta,
        device=args.device,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    mean_ap = "n/a" if s["mAP"] is None else f"{s['mAP']:.4f}"
    print(f"mAP {mean_ap} on the first {s['n_images']} {args.split} images")
    for label in ("best", "worst"):
        print(f"{label:5s}: " + ", ".join(f"{name} ({score:+.2f})" for name, score in s[label]))
    print(f"wrote {s['out']}/best_worst.png, cases.csv, cases/, evaluation.json")
    return 0
