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
    p = sub.add_parser("train", help="train one model and evaluate it on the test split")
    p.add_argument("--preset", default="cpu", help="paper | cpu | smoke (default: cpu)")
    p.add_argument("--model", default=None, help="model name (default: the preset's, retina_unet)")
    p.add_argument("--task", default=None, help="donuts_shape | donuts_pattern | circles_scale")
    p.add_argument("--dim", type=int, default=2, choices=(2, 3), help="spatial dimensions")
    p.add_argument("--n-train", type=int, default=None, help="training set size (nested subset per seed)")
    p.add_argument("--seed", type=int, default=None, help="run seed: subset, initialisation, batches")
    p.add_argument("--out", required=True, help="run directory (resumes when it holds last.pt)")
    p.add_argument(
        "--data-root", default=None, help="toy dataset cache (default: $RETINA_UNET_DATA or data/cache)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any TrainConfig field, e.g. --set lr=3e-4 --set patch_size=(96,96)",
    )
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from retina_unet.training import parse_override, preset, train_and_evaluate
    from retina_unet.training.run import DEFAULT_DATA_ROOT

    overrides = dict(parse_override(s) for s in args.overrides)
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
    if args.no_resume and (out / "last.pt").exists():
        print(f"error: {out} already holds a run (last.pt); drop --no-resume to continue it", file=sys.stderr)
        return 2
    result = train_and_evaluate(
        cfg, out, data_root=args.data_root or DEFAULT_DATA_ROOT, progress=not args.quiet
    )
    print(json.dumps({k: result[k] for k in ("mAP", "ap", "patient_mAP", "train_s", "wall_s")}, indent=2))
    print(f"result: {out / 'result.json'}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a run directory (top-k ensemble) or one checkpoint file")
    p.add_argument("run", nargs="?", default=None, help="run directory or checkpoint (same as --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="run directory or an epoch_*.pt / last.pt file")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--n", type=int, default=None, help="only the first n images of the split")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override inference settings, e.g. --set tta=False --set merge=nms",
    )
    p.add_argument("--out", default=None, help="write the evaluation JSON here")
    p.add_argument(
        "--metrics-out",
        default=None,
        metavar="DIR",
        help="write every metric here: metrics.json, per_case.csv, detections.csv, pr.png, froc.png "
        "(docs/metrics.md); reuses the run's stored test_predictions.pt when it matches",
    )
    p.add_argument("--iou-grid", default="paper", choices=("paper", "coco"),
                   help="IoU grid of the COCO-style AP: paper = 0.1:0.5 (default), coco = 0.5:0.95")
    p.add_argument("--no-reuse", action="store_true", help="predict even when stored predictions match")
    p.add_argument("--save-predictions", action="store_true",
                   help="with --metrics-out: store fresh test predictions in the run directory when it has none")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from retina_unet.training import (
        TrainConfig,
        build_from_config,
        load_checkpoint,
        parse_override,
        save_json,
    )
    from retina_unet.training.engine import resolve_device
    from retina_unet.training.run import DEFAULT_DATA_ROOT, ensure_dataset, evaluate_models, load_models

    if (args.run is None) == (args.checkpoint is None):
        raise ValueError("evaluate: give the run directory or checkpoint once, as RUN or --checkpoint")
    path = Path(args.run or args.checkpoint)
    overrides = dict(parse_override(s) for s in args.overrides)
    if args.metrics_out:
        from retina_unet.training.predictions import evaluate_run_command

        return evaluate_run_command(args, path, overrides)
    if path.is_dir():
        cfg, models, _ = load_models(path)
        cfg = cfg.replace(**overrides)
        models = models if cfg.ensemble_top_k else models[:1]
    else:
        ck = load_checkpoint(path)
        cfg = TrainConfig.from_dict(ck["config"]).replace(**overrides)
        model = build_from_config(cfg, num_classes=ck.get("num_classes", 2))
        model.load_state_dict(ck["model"])
        models = [model.eval()]
    device = resolve_device(cfg.device)
    models = [m.to(device) for m in models]
    dataset = ensure_dataset(cfg, args.data_root or DEFAULT_DATA_ROOT, splits=(args.split,))
    res = evaluate_models(cfg, models, dataset.split(args.split), device, progress=True, n=args.n)
    res = json.loads(json.dumps(res, default=str))
    if args.out:
        save_json(res, args.out)
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
    "curves": _lazy("retina_unet.training.curves", "add_curves_subcommand"),
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
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
