"""``python -m retina_unet.study run|status|report|presets`` (also mountable under another CLI).

Examples::

    python -m retina_unet.study run --preset quick                  # -> studies/quick, then report
    python -m retina_unet.study run --preset smoke --backend ray     # a local Ray instance
    python -m retina_unet.study run --preset paper --backend ray --address auto --gpus-per-run 1
    python -m retina_unet.study run --preset quick --n-train 1000 100 20 --seeds 0 1 --out studies/q2
    python -m retina_unet.study run --out studies/quick --seeds 3 4      # grow a study: two more seeds
    python -m retina_unet.study run --preset quick --until-resolved --max-seeds 8
    python -m retina_unet.study status --out studies/quick
    python -m retina_unet.study report --out studies/quick           # -> studies/quick/report/README.md
    python -m retina_unet.study report --out studies/quick --report-dir reports/quick   # the committed one
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from retina_unet.study.definition import PRESETS, StudyDefinition, StudyError, preset
from retina_unet.study.store import StudyFolder
from retina_unet.training.config import parse_overrides


def _definition(args: argparse.Namespace) -> StudyDefinition:
    """--preset (default: the folder's own definition, else quick) with the grid options on top."""
    base = None
    if args.preset is None and args.out and (Path(args.out) / "study.json").exists():
        base = StudyFolder(args.out).load_definition()
    if base is None:
        from retina_unet.study.definition import DEFAULT_PRESET

        base = preset(args.preset or DEFAULT_PRESET)
    changes = {k: tuple(v) for k, v in (("tasks", args.tasks), ("models", args.models), ("n_train", args.n_train),
                                         ("seeds", args.seeds), ("dims", args.dims)) if v}
    if args.train_preset:
        changes["train_preset"] = args.train_preset
    if args.set:
        try:  # the one override parser (as `train --set`): values checked against TrainConfig's types
            parsed = parse_overrides(args.set)
        except ValueError as exc:
            raise StudyError(str(exc)) from None
        changes["overrides"] = {**dict(base.overrides), **parsed}
    if args.name:
        changes["name"] = args.name
    return base.replace(**changes) if changes else base


def _out(args: argparse.Namespace, name: str) -> Path:
    return Path(args.out) if args.out else Path("studies") / name


def _report_dir(args: argparse.Namespace, name: str) -> Path:
    """--report-dir, else ``<study folder>/report``: a user's study never rewrites the committed
    reference report under reports/ (regenerated only on purpose: --report-dir reports/<name>)."""
    return Path(args.report_dir) if args.report_dir else _out(args, name) / "report"


def _command(args: argparse.Namespace) -> str:
    """The command line to record (set by :func:`dispatch`; rebuilt when a command is called directly)."""
    return getattr(args, "command_line", None) or " ".join(["python -m retina_unet", *map(shlex.quote, sys.argv[1:])])


def cmd_run(args: argparse.Namespace) -> int:
    from retina_unet.study.backends import LocalBackend, RayBackend
    from retina_unet.study.runner import run_study

    definition = _definition(args)
    if args.backend == "ray":
        backend = RayBackend(args.address, args.cpus_per_run or 1, args.gpus_per_run, args.num_cpus, args.workers)
    else:
        if args.address:
            raise StudyError("--address needs --backend ray")
        backend = LocalBackend(args.workers, args.cpus_per_run)
    out = _out(args, definition.name)
    if args.dry_run:
        return _dry_run(definition, out)
    command = _command(args)
    try:
        if args.until_resolved:
            from retina_unet.study.grow import run_until_resolved

            if args.max_runs is not None:
                raise StudyError("--until-resolved cannot be combined with --max-runs")
            grown = run_until_resolved(definition, out, max_seeds=args.max_seeds, backend=backend,
                                       data_root=args.data_root, progress=not args.no_progress, command=command)
            summary = grown.sweeps[-1]
        else:
            summary = run_study(definition, out, backend=backend, data_root=args.data_root,
                                progress=not args.no_progress, max_runs=args.max_runs, command=command)
    except KeyboardInterrupt:
        print(f"\n[study] interrupted: finished runs are kept in {out}/runs (each result is written whole); "
              f"rerun the same command to resume (unfinished runs continue from their last epoch)",
              file=sys.stderr)
        return 130
    print(f"[study] {len(summary.done)} run(s) done, {len(summary.failed)} failed, {summary.skipped} already "
          f"finished, {summary.total} in the study; {summary.wall_time_s:.0f} s", file=sys.stderr)
    if summary.failed:
        print(f"[study] failed runs (tracebacks in {out / 'failed'}): {', '.join(summary.failed)}", file=sys.stderr)
    if args.report and summary.complete:
        from retina_unet.study.report import write_report

        path = write_report(out, _report_dir(args, definition.name))
        print(f"[study] report: {path}", file=sys.stderr)
    return 0 if not summary.failed else 1


def _dry_run(definition: StudyDefinition, out: Path) -> int:
    """Validate and resolve every run, say which are finished; run and write nothing."""
    from retina_unet.study.engine import TrainingEngine
    from retina_unet.study.runner import plan_study

    folder = StudyFolder(out)
    folder.check_definition(definition)
    existing = folder.load_definition()
    if existing is not None:
        added = existing.added_by(definition)
        if added:
            print(f"grows the study in {out}: adds " + "; ".join(f"{k} {v}" for k, v in added.items()))
        definition = existing.union(definition)
    planned = plan_study(definition, TrainingEngine(), folder.planned_specs(definition))
    done = 0
    for spec, h in planned:
        finished = folder.read_result(f"{spec.label}-{h}", h) is not None
        done += finished
        print(f"{'finished' if finished else 'to run  '}  {spec.label}-{h}")
    print(f"{definition.name} ({definition.protocol_hash}): {len(planned)} runs, {done} finished, {len(planned) - done} to run "
          f"-> {out}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from retina_unet.study.runner import study_status

    if not args.out:
        raise StudyError("status needs --out STUDY_FOLDER")
    st = study_status(args.out)
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        from retina_unet.study.progress import format_seconds

        eta = st["mean_run_s"] * st["left"] if st["mean_run_s"] else None
        print(f"{st['study']} ({st['hash']}) in {st['folder']}: {st['finished']}/{st['total']} finished, "
              f"{st['running']} running, {st['failed']} failed, {st['left']} left "
              f"(~{format_seconds(eta)} sequential at {format_seconds(st['mean_run_s'])}/run); "
              f"sweep {'active' if st['sweep_active'] else 'not running'}"
              + (f"; {st['outdated']} result(s) of older training configs ignored" if st["outdated"] else ""))
        for rid in st["running_runs"]:
            print(f"  running: {rid}")
        for rid in st["failed_runs"]:
            print(f"  failed:  {rid}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from retina_unet.study.report import write_report

    if args.from_results:
        return _report_from_results(args)
    if not args.out:
        raise StudyError("report needs --out STUDY_FOLDER (or --from-results CSV --report-dir DIR)")
    definition = StudyFolder(args.out).load_definition()
    if definition is None:
        raise StudyError(f"{args.out} is not a study folder (no study.json)")
    command = _command(args)
    path = write_report(args.out, _report_dir(args, definition.name), n_examples=args.examples, command=command)
    print(f"[study] report: {path}", file=sys.stderr)
    return 0


def _report_from_results(args: argparse.Namespace) -> int:
    """A report from a results table alone (a ``results.csv`` an earlier report wrote): the findings,
    tables and figures are recomputed with today's rules; learning curves and examples need the
    study folder and are left out."""
    import pandas as pd

    from retina_unet.study.report import render_report

    if not args.report_dir:
        raise StudyError("report --from-results needs --report-dir DIR")
    src = Path(args.from_results)
    if not src.is_file():
        raise StudyError(f"--from-results: no file at {src}")
    df = pd.read_csv(src)
    missing = {"task", "dim", "model", "n_train", "seed", "map"} - set(df.columns)
    if missing:
        raise StudyError(f"--from-results: {src} is not a study results table (missing columns {sorted(missing)})")
    command = _command(args)
    commits = sorted(str(c) for c in df["commit"].dropna().unique()) if "commit" in df else []
    header = [f"- made from the results table `{src}` ({len(df)} runs) by `{command}`: findings, tables and "
              "figures recomputed with the current rules; no study folder, so no learning curves or examples",
              f"- code commit(s) of the runs: {', '.join(f'`{c}`' for c in commits) or 'unknown'}"]
    same = (Path(args.report_dir) / "results.csv").resolve() == src.resolve()
    path = render_report(df, args.report_dir, header, title=args.title or src.parent.name, write_results=not same)
    print(f"[study] report: {path}", file=sys.stderr)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from retina_unet.study.definition import STUDY_PRESET_NOTES

    for name, d in PRESETS.items():
        print(f"{name}: {len(d.runs())} runs = {len(d.tasks)} task(s) x {len(d.models)} model(s) x "
              f"{len(d.n_train)} size(s) x {len(d.seeds)} seed(s) x {len(d.dims)} dim(s); training preset "
              f"{d.train_preset!r}; {STUDY_PRESET_NOTES.get(name, '')}\n  {json.dumps(d.to_dict())}")
    return 0


def add_study_subcommands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Mount ``study run|status|report|presets`` on another CLI's subparsers.

    Each subcommand sets ``func`` (call ``args.func(args)``, an int exit code); :class:`StudyError` is
    a ``ValueError``. :func:`dispatch` calls ``func`` and turns a StudyError into a message and exit 2.
    In ``retina_unet/cli.py``: ``COMMANDS["study"] = add_study_subcommands``.
    """
    study = subparsers.add_parser("study", help="the toy data-size scaling study: run, status, report")
    _fill(study)
    return study


def _fill(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="study_command", required=True)
    run = sub.add_parser("run", help="run (or resume) a study")
    run.add_argument("--preset", choices=sorted(PRESETS), help="study preset (default: the folder's own, else quick)")
    run.add_argument("--out", help="study folder (default: studies/<name>)")
    run.add_argument("--name", help="study name (default: the preset's)")
    run.add_argument("--tasks", nargs="+", metavar="TASK", help="tasks of the grid (default: the preset's)")
    run.add_argument("--models", nargs="+", metavar="MODEL", help="models of the grid (default: the preset's)")
    run.add_argument("--n-train", nargs="+", type=int, metavar="N", help="training sizes of the grid")
    run.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="seeds of the grid")
    run.add_argument("--dims", nargs="+", type=int, choices=(2, 3), help="spatial dimensions of the grid")
    run.add_argument("--train-preset", help="training engine preset: smoke | cpu | paper")
    run.add_argument("--set", nargs="+", metavar="KEY=VALUE", help="TrainConfig overrides for every run, checked against their types (as train --set)")
    run.add_argument("--backend", choices=("local", "ray"), default="local",
                     help="local process pool (default) or a Ray cluster")
    run.add_argument("--workers", type=int, help="parallel runs (local default: cpus // cpus-per-run)")
    run.add_argument("--cpus-per-run", type=int, help="torch threads / Ray CPUs per run (default 1)")
    run.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray GPUs per run (default 0)")
    run.add_argument("--address", help="Ray cluster address (omit: start a local Ray instance)")
    run.add_argument("--num-cpus", type=int, help="CPUs of a locally started Ray instance (default: all)")
    run.add_argument("--data-root", help="toy-data folder for the training engine")
    run.add_argument("--max-runs", type=int, help="run at most this many runs in this sweep")
    run.add_argument("--until-resolved", action="store_true",
                     help="then add seeds, one at a time, to the cells of the paper's claims that are still "
                          "unresolved, keeping every finished run (stops when resolved or at --max-seeds)")
    run.add_argument("--max-seeds", type=int, default=10, metavar="K",
                     help="--until-resolved: at most K seeds per cell (default 10)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--dry-run", action="store_true", help="validate and list the runs; run nothing")
    run.add_argument("--report", action="store_true", help="write the report when the study is complete")
    run.add_argument("--report-dir", help="report folder (default: <study folder>/report; the committed reference: reports/<name>)")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="finished / running / failed / left of a study folder")
    status.add_argument("--out", required=True, help="study folder")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)
    report = sub.add_parser("report", help="CSV, figures and Markdown report from a study folder")
    report.add_argument("--out", help="study folder")
    report.add_argument("--from-results", metavar="CSV",
                        help="make the report from a results table (an earlier report's results.csv) instead")
    report.add_argument("--title", help="--from-results: the study's name in the title (default: the CSV's folder)")
    report.add_argument("--report-dir", help="report folder (default: <study folder>/report; the committed reference: reports/<name>)")
    report.add_argument("--examples", type=int, default=3, help="example test images per model in the panel")
    report.set_defaults(func=cmd_report)
    presets = sub.add_parser("presets", help="list the study presets")
    presets.set_defaults(func=cmd_presets)


def dispatch(args: argparse.Namespace, prog: str = "python -m retina_unet.study") -> int:
    """Run a parsed study command; a :class:`StudyError` becomes a one-paragraph message and exit 2."""
    args.command_line = getattr(args, "command_line", None) or " ".join([prog, *map(shlex.quote, sys.argv[1:])])
    try:
        return args.func(args)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retina_unet.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _fill(parser)
    args = parser.parse_args(argv)
    if argv is not None:
        args.command_line = " ".join(["python -m retina_unet.study", *map(shlex.quote, argv)])
    return dispatch(args)
