"""Command line: ``retina-unet <command>`` / ``python -m retina_unet <command>``.

Commands: ``train`` (one run with a preset and overrides), ``evaluate`` (a trained run or one
checkpoint on a split; ``--metrics-out`` for every metric), ``summarize`` (a markdown table of
result files) and ``curves`` (learning-curve figure). Each command is a small module-level
function registered in ``COMMANDS``; more (study, doctor, predict) plug in the same way.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def _add_train(sub) -> None:
    import toy_data
    from retina_unet.models import MODEL_NAMES
    from retina_unet.training.config import PRESETS

    p = sub.add_parser(
        "train",
        help="train one model and evaluate it on the test split",
        description=f"Models: {', '.join(MODEL_NAMES)}. Tasks: {', '.join(toy_data.TASKS)}. "
        f"Presets: {', '.join(PRESETS)}.",
    )
    p.add_argument("--preset", default="cpu", help=f"{' | '.join(PRESETS)} (default: cpu)")
    p.add_argument("--model", default=None, metavar="MODEL",
                   help=f"{' | '.join(MODEL_NAMES)} (default: the preset's, retina_unet)")
    p.add_argument("--task", default=None, metavar="TASK",
                   help=f"{' | '.join(toy_data.TASKS)} (default: donuts_shape)")
    p.add_argument("--dim", type=int, default=2, choices=(2, 3), help="spatial dimensions")
    p.add_argument("--n-train", type=int, default=None, help="training set size (nested subset per seed)")
    p.add_argument("--seed", type=int, default=None, help="run seed: subset, initialisation, batches")
    p.add_argument("--out", required=True,
                   help="run directory: new, empty, or a run to resume (a folder holding other files is refused)")
    p.add_argument(
        "--data-root", default=None, help="toy dataset cache (default: $RETINA_UNET_DATA or data/cache)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any TrainConfig field, checked against its type, e.g. --set lr=3e-4 "
        "--set patch_size=(96,96) --set tta=false",
    )
    p.add_argument("--no-resume", action="store_true",
                   help="start over: delete the run files in --out (last.pt, epoch_*.pt, results) and train anew")
    p.add_argument("--re-evaluate", action="store_true",
                   help="a finished run is left untouched unless this is given: test it again "
                   "(with the test-time settings of this call) and rewrite result.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from retina_unet.data import DEFAULT_DATA_ROOT
    from retina_unet.pipeline import train_and_evaluate
    from retina_unet.rundir import RunDir
    from retina_unet.training import parse_overrides, preset

    overrides = parse_overrides(args.overrides)
    for key, val in (
        ("model", args.model),
        ("task", args.task),
        ("n_train", args.n_train),
        ("seed", args.seed),
    ):
        if val is not None:
            overrides[key] = val
    cfg = preset(args.preset, args.dim, **overrides)
    out = Path(args.out)
    RunDir(out).check_train_target()  # before any data is generated
    result = train_and_evaluate(
        cfg,
        out,
        data_root=args.data_root or DEFAULT_DATA_ROOT,
        progress=not args.quiet,
        resume=not args.no_resume,
        re_evaluate=args.re_evaluate,
    )
    if result.get("already_finished"):
        print(f"{out} is a finished run, left untouched (test mAP {_f(result['mAP'])}); its result: "
              f"{out / 'result.json'}. Test it again with --re-evaluate, or use `retina-unet evaluate {out}`.")
        return 0
    print(json.dumps({k: result[k] for k in ("mAP", "ap", "patient_mAP", "train_s", "wall_s")}, indent=2))
    print(f"result: {out / 'result.json'}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run directory (top-k ensemble) or one checkpoint file")
    p.add_argument("run", nargs="?", default=None, help="run directory or checkpoint (same as --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="run directory or an epoch_*.pt / last.pt file")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="which toy split to evaluate on (default test)")
    p.add_argument("--data-root", default=None,
                   help="toy dataset cache (default: $RETINA_UNET_DATA or data/cache)")
    p.add_argument("--n", type=int, default=None, help="only the first n images of the split")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override inference settings, checked against their types, e.g. --set tta=false --set merge=nms",
    )
    p.add_argument("--out", default=None, help="write the evaluation JSON here")
    p.add_argument(
        "--metrics-out",
        default=None,
        metavar="DIR",
        help="write every metric here: metrics.json, per_case.csv, detections.csv, pr.png, froc.png "
        "(docs/metrics.md)",
    )
    p.add_argument("--iou-grid", default="paper", choices=("paper", "coco"),
                   help="IoU grid of the COCO-style AP: paper = 0.1:0.5 (default), coco = 0.5:0.95")
    p.add_argument("--no-reuse", action="store_true",
                   help="predict even when the run's stored test_predictions.pt match (they are reused otherwise)")
    p.add_argument("--save-predictions", action="store_true",
                   help="store fresh test predictions in the run directory when it has none")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from retina_unet.atomic_io import write_json_atomic
    from retina_unet.pipeline import evaluate_run
    from retina_unet.training import parse_overrides

    if (args.run is None) == (args.checkpoint is None):
        raise ValueError("evaluate: give the run directory or checkpoint once, as RUN or --checkpoint")
    path = Path(args.run or args.checkpoint)
    overrides = parse_overrides(args.overrides)
    res = evaluate_run(path, args.split, args.n, overrides, args.data_root, reuse=not args.no_reuse,
                       progress=True, save=args.save_predictions, metrics_out=args.metrics_out, grid=args.iou_grid)
    res = json.loads(json.dumps(res, default=str))
    if args.out:
        write_json_atomic(args.out, res, indent=2)
    meta = res["meta"]
    how = "stored predictions" if meta["predictions"] == "stored" else f"predicted ({meta['why_predicted']})"
    print(f"{res['n_images']} {args.split} images, {how}, {meta['prediction_s']:.1f} s")
    if args.metrics_out:
        from retina_unet.evaluation.export import summary_lines

        print("\n".join(summary_lines(res)))
        print(f"wrote {args.metrics_out}/: " + ", ".join(res["files"]))
    else:
        print(json.dumps({k: res[k] for k in ("mAP", "ap", "patient_mAP", "n_images", "n_members")}, indent=2))
    return 0


def _add_summarize(sub) -> None:
    p = sub.add_parser(
        "summarize", help="a markdown table (model, task, n_train, seed, mAP, times) of result.json files"
    )
    p.add_argument("results", nargs="+", help="result.json files or run directories")
    p.set_defaults(func=cmd_summarize)


def cmd_summarize(args) -> int:
    rows = []
    for item in args.results:
        path = Path(item) / "result.json" if Path(item).is_dir() else Path(item)
        r = json.loads(path.read_text())
        c = r["config"]
        ap = r["ap"]
        rows.append(
            (
                c["model"],
                f"{c['task']} {c['spatial_dims']}D",
                c["n_train"],
                r["seed"],
                _f(r["mAP"]),
                " / ".join(_f(ap[k]) for k in sorted(ap)),
                _f(r["patient_mAP"]),
                f"{r['train_s'] / 60:.1f}",
                f"{r['wall_s'] / 60:.1f}",
                r["test"]["n_images"],
                (r["environment"].get("gpu") or "cpu"),
            )
        )
    head = (
        "model",
        "task",
        "n_train",
        "seed",
        "test mAP",
        "AP per class",
        "patient mAP",
        "train min",
        "wall min",
        "test images",
        "device",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    return 0


def _add_curves(sub) -> None:
    p = sub.add_parser("curves", help="plot training loss and validation mAP per epoch of run directories")
    p.add_argument("runs", nargs="+", help="run directories (metrics.csv / history.json / result.json) or such files")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--labels", default=None, help="comma-separated legend labels (default: the run folder names)")
    p.set_defaults(func=cmd_curves)


def cmd_curves(args) -> int:
    from retina_unet.training.curves import load_curve, plot_learning_curves, run_label

    labels = args.labels.split(",") if args.labels else [run_label(r) for r in args.runs]
    if not args.labels and len(set(labels)) < len(labels):  # same folder names: use the paths
        labels = list(args.runs)
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    curves = {lab: load_curve(r) for lab, r in zip(labels, args.runs, strict=True)}
    print(f"wrote {plot_learning_curves(curves, args.out)}")
    return 0


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _lazy(module: str, builder: str) -> Callable:
    """A parser builder that imports ``module`` only when the parser is built (keeps
    ``retina-unet --help`` and the core commands free of the study / predict / plotting imports)."""

    def add(sub) -> None:
        getattr(importlib.import_module(module), builder)(sub)

    return add


# name -> parser builder; add a command by adding an entry.
COMMANDS: dict[str, Callable] = {
    "train": _add_train,
    "evaluate": _add_evaluate,
    "predict": _lazy("retina_unet.predict.cli", "add_predict_subcommand"),
    "export-toy": _lazy("retina_unet.predict.cli", "add_export_toy_subcommand"),
    "overlays": _lazy("retina_unet.predict.cli", "add_overlays_subcommand"),
    "summarize": _add_summarize,
    "study": _lazy("retina_unet.study.cli", "add_study_subcommands"),
    "doctor": _lazy("retina_unet.doctor", "add_doctor_subcommand"),
    "curves": _add_curves,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retina-unet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # incl. CheckpointError, InputError: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
