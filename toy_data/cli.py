"""Command line: ``python -m toy_data generate ...`` and ``python -m toy_data preview DIR --out PNG``.

Examples::

    python -m toy_data generate --task donuts_shape --dim 2 --n-train 1000 --seed 0 --out data/donuts
    python -m toy_data generate --dim 3 --out data/toy3d          # all three tasks into data/toy3d/<task>
    python -m toy_data preview data/donuts --out donuts.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .generate import GENERATOR_VERSION
from .spec import TASKS, task_spec
from .storage import DatasetError, load_dataset, write_dataset


def _positive(flag: str):
    """argparse type: an integer >= 1 (an empty split trains or tests on nothing)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects an integer >= 1, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} expects an integer >= 1, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="toy_data", description="Retina U-Net toy datasets (2D paper tasks, 3D analogues)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate dataset folder(s)")
    g.add_argument("--task", choices=TASKS, help="one task into OUT (default: all three into OUT/<task>)")
    g.add_argument("--dim", type=int, choices=(2, 3), default=2)
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--seed", type=int, default=0, help="dataset seed (train/val/test streams derive from it)")
    g.add_argument(
        "--n-train", type=_positive("--n-train"), default=1000,
        help="training pool size, >= 1 (nested subsets are prefixes)",
    )
    g.add_argument("--n-val", type=_positive("--n-val"), default=500, help="validation images, >= 1")
    g.add_argument("--n-test", type=_positive("--n-test"), default=1000, help="test images, >= 1")
    g.add_argument(
        "--workers", type=int, default=None, help="generation threads (default: CPUs - 1, at most 4)"
    )
    g.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    o = g.add_argument_group("task overrides (default: the task's paper/3D defaults)")
    o.add_argument(
        "--size", type=int, nargs="+", help="image size: one value for every axis, or one per axis"
    )
    o.add_argument(
        "--radii", type=float, nargs=2, metavar=("R1", "R2"), help="object radius of class 1 and 2"
    )
    o.add_argument("--hole-radius", type=float, help="hole radius of class-2 donuts")
    o.add_argument("--contrast", type=float, help="intensity added to object pixels (default 0.2)")
    o.add_argument("--margin", type=int, help="centres are uniform in [margin, size - margin)")
    o.add_argument("--no-noise", action="store_true", help="background exactly 0 instead of uniform [0, 1)")
    o.add_argument("--objects-per-image", type=int, help="objects per image (placed without overlap)")
    o.add_argument("--gap", type=float, help="minimum free distance between objects (K > 1)")

    v = sub.add_parser("preview", help="draw examples per class with mask outlines and boxes")
    v.add_argument("dataset", type=Path)
    v.add_argument("--out", type=Path, required=True, help="PNG to write")
    v.add_argument("--split", default="train", choices=("train", "val", "test"))
    v.add_argument("--per-class", type=int, default=4)
    v.add_argument("--verify", action="store_true", help="also verify the checksums first")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    ov: dict = {}
    if args.size is not None:
        ov["size"] = args.size[0] if len(args.size) == 1 else tuple(args.size)
    if args.radii is not None:
        ov["radii"] = tuple(args.radii)
    for name in ("hole_radius", "contrast", "margin", "objects_per_image", "gap"):
        if getattr(args, name) is not None:
            ov[name] = getattr(args, name)
    if args.no_noise:
        ov["noise"] = False
    return ov


def _generate(args: argparse.Namespace) -> int:
    tasks = [args.task] if args.task else list(TASKS)
    specs = [task_spec(t, args.dim, **_overrides(args)) for t in tasks]  # validate all before writing any
    problem = _layout_problem(args.out, single_task=args.task is not None)
    if problem:
        print(f"error: --out {args.out}: {problem}; choose another --out", file=sys.stderr)
        return 2
    if args.out.is_dir() and not any(args.out.iterdir()):
        args.out.rmdir()  # an empty folder is as good as none (write_dataset renames into place)
    for spec in specs:
        out = args.out if args.task else args.out / spec.task
        counts = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
        if out.exists() and not args.overwrite:
            if _up_to_date(out, spec, args.seed, counts):
                print(f"{out}: up to date (same task, seed and sizes); skipped", file=sys.stderr)
                continue
            print(
                f"error: {out} exists with different contents; use --overwrite to replace it", file=sys.stderr
            )
            return 2
        write_dataset(
            spec,
            out,
            seed=args.seed,
            n_train=args.n_train,
            n_val=args.n_val,
            n_test=args.n_test,
            workers=args.workers,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _layout_problem(out: Path, single_task: bool) -> str | None:
    """Why ``out`` cannot take this layout (None when it can): never mix the two layouts or other files.

    With ``--task`` OUT is one dataset folder (``manifest.json`` + split folders); without it OUT holds
    one dataset folder per task. ``--overwrite`` replaces a dataset, never a folder of something else.
    """
    if not out.exists():
        return None
    if not out.is_dir():
        return "exists and is not a folder"
    entries = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if not entries:
        return None
    is_dataset = (out / "manifest.json").is_file()
    if single_task:
        if is_dataset:
            return None
        tasks = [e for e in entries if e in TASKS]
        if tasks:
            return (f"holds one dataset folder per task ({', '.join(tasks)}); generate into {out}/<task> "
                    "or without --task")
        return f"exists and is not a dataset folder (holds {', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''})"
    if is_dataset:
        return "is a single-task dataset folder; without --task OUT gets one folder per task"
    others = [e for e in entries if e not in TASKS]
    if others:
        return f"holds files that are not task folders ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
    return None


def _up_to_date(out: Path, spec, seed: int, counts: dict) -> bool:
    try:
        ds = load_dataset(out, verify=False)
    except DatasetError:
        return False
    m = ds.manifest
    return (
        ds.spec == spec
        and m.get("seed") == seed
        and {k: v["n"] for k, v in m["splits"].items()} == counts
        and m.get("generator_version") == GENERATOR_VERSION
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            return _generate(args)
        from .preview import write_preview

        path = write_preview(
            args.dataset, args.out, split=args.split, per_class=args.per_class, verify=args.verify
        )
        print(f"wrote {path}", file=sys.stderr)
        return 0
    except (ValueError, FileExistsError) as e:  # DatasetError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
