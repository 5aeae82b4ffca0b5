"""Run a study: validate everything, skip what is finished, run the rest on a backend, report progress."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina_unet.study.backends import LocalBackend
from retina_unet.study.definition import DEFAULT_POOL_SIZE, RunSpec, StudyDefinition, StudyError
from retina_unet.study.engine import Engine, TrainingEngine
from retina_unet.study.execute import RunJob, plan
from retina_unet.study.progress import SweepProgress
from retina_unet.study.store import MAP_KEY, StudyFolder, git_commit


@dataclass
class SweepSummary:
    total: int
    skipped: int  # finished before this sweep
    done: list[str] = field(default_factory=list)  # run ids finished by this sweep
    failed: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.skipped + len(self.done) == self.total


def plan_study(definition: StudyDefinition, engine: Engine, specs: list[RunSpec] | None = None) -> list[tuple[RunSpec, str]]:
    """Validate the definition and resolve every run's config: (spec, config hash) per run.

    ``specs`` (default: the definition's grid) are the runs to resolve. Everything that can be wrong
    with the inputs is found here, before a folder is touched.
    """
    cat = engine.catalogue()
    definition.validate(cat["tasks"], cat["models"], cat["pool_size"], cat["presets"])
    planned, seen, problems = [], {}, []
    for spec in definition.runs() if specs is None else specs:
        try:
            h, cfg = plan(engine, spec)
        except Exception as exc:
            problems.append(f"{spec.label}: the training engine rejects its config: {type(exc).__name__}: {exc}")
            continue
        pool = cfg.get("pool_train", cat["pool_size"] or DEFAULT_POOL_SIZE)
        if spec.n_train > pool:
            problems.append(f"{spec.label}: n_train {spec.n_train} is larger than the training pool ({pool} images)")
        if h in seen:
            problems.append(f"{seen[h]} and {spec.label} resolve to the same training config (hash {h}): the "
                            "engine ignores a grid axis; fix the grid or the overrides")
        seen[h] = spec.label
        planned.append((spec, h))
    if problems:
        head = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise StudyError(f"study {definition.name!r}: {len(problems)} run(s) cannot run; nothing was started:\n  - "
                         + "\n  - ".join(head))
    return planned


def plan_folder(folder: StudyFolder, definition: StudyDefinition, engine: Engine) -> list[tuple[RunSpec, str]]:
    """:func:`plan_study` of every run the folder holds for ``definition`` (grid plus extra runs)."""
    return plan_study(definition, engine, folder.planned_specs(definition))


def run_study(
    definition: StudyDefinition,
    out: str | os.PathLike[str],
    *,
    engine: Engine | None = None,
    backend: Any = None,
    data_root: str | os.PathLike[str] | None = None,
    progress: bool = True,
    max_runs: int | None = None,
    command: str | None = None,
) -> SweepSummary:
    """Run every unfinished run of ``definition`` into the study folder ``out``.

    Idempotent: finished runs (valid result files) are skipped, so rerunning after a crash or a kill
    resumes. Raises :class:`StudyError` before writing anything when the definition is invalid, a
    run's config is rejected, or ``out`` holds another study. ``max_runs`` caps this sweep's runs.
    """
    engine = engine or TrainingEngine()
    backend = backend or LocalBackend()
    folder = StudyFolder(out)
    plan_study(definition, engine)  # everything asked for is valid, before the folder is touched
    if data_root is None and hasattr(engine, "default_data_root"):
        data_root = engine.default_data_root()
    folder.check_definition(definition)  # before the lock creates anything
    t0 = time.time()
    with folder.lock():
        definition = folder.initialise(definition)  # the folder's grid, grown by this one's
        planned = plan_folder(folder, definition, engine)
        ids = {f"{spec.label}-{h}" for spec, h in planned}
        stale = len(ids.intersection(folder.interrupted()))
        threads = getattr(backend, "threads", None) or max(1, int(getattr(backend, "cpus_per_run", 1)))
        jobs, skipped = [], 0
        for spec, h in planned:
            job = RunJob(spec, h, str(folder.root.resolve()), definition.protocol_hash,
                         str(Path(data_root).resolve()) if data_root else None, threads, backend.name)
            if folder.read_result(job.run_id, h) is not None:
                skipped += 1
            else:
                jobs.append(job)
        if max_runs is not None:
            jobs = jobs[:max_runs]
        summary = SweepSummary(total=len(planned), skipped=skipped)
        print(f"[study] {definition.name} ({definition.protocol_hash}) -> {folder.root}: {len(planned)} runs, {skipped} "
              f"finished, {len(jobs)} to run" + (f", {stale} interrupted run(s) to resume" if stale else ""),
              file=sys.stderr)
        if not jobs:
            return summary
        print(f"[study] backend {backend.describe()}", file=sys.stderr)  # before the bar draws
        view = SweepProgress(len(planned), skipped, backend.concurrency, enabled=progress)
        n_started = 0

        def started(job: RunJob) -> None:
            nonlocal n_started
            n_started += 1
            view.concurrency = max(1, backend.concurrency)  # known once the backend started (Ray)
            view.started_run()

        def finished(job: RunJob, env: dict[str, Any]) -> None:
            seconds = float(env.get("runner", {}).get("wall_time_s", 0.0))
            ok = env.get("status") == "ok"
            if ok and folder.read_result(job.run_id, job.config_hash) is None:
                folder.write_result(env)  # the worker could not see the folder (Ray without shared fs)
            if not ok and not (folder.failed / f"{job.run_id}.json").exists():
                folder.record_failure(env)
            (summary.done if ok else summary.failed).append(job.run_id)
            detail = f"mAP {env['result'][MAP_KEY]:.3f}" if ok else env.get("error", "")
            view.finished_run(job.spec.label, ok, seconds, detail)

        try:
            backend.execute(jobs, engine, started, finished)
        finally:
            view.close()
            summary.wall_time_s = time.time() - t0
            if n_started:  # a backend that never started a run (no Ray cluster answered) is no sweep
                folder.log_sweep({"command": command or " ".join(sys.argv), "commit": git_commit(),
                              "backend": backend.describe(), "started": t0, "wall_time_s": summary.wall_time_s,
                              "done": len(summary.done), "failed": len(summary.failed),
                                  "skipped": skipped})
    return summary


def study_status(out: str | os.PathLike[str], engine: Engine | None = None) -> dict[str, Any]:
    """Counts of a study folder without running anything (finished / failed / running / left)."""
    folder = StudyFolder(out)
    definition = folder.load_definition()
    if definition is None:
        raise StudyError(f"{out} is not a study folder (no study.json)")
    engine = engine or TrainingEngine()
    planned = plan_folder(folder, definition, engine)
    ids = {f"{spec.label}-{h}": h for spec, h in planned}
    finished = [rid for rid, h in ids.items() if folder.read_result(rid, h) is not None]
    failed = [f["run_id"] for f in folder.failures() if f.get("run_id") in ids and f["run_id"] not in finished]
    live = folder.is_locked()
    running = [r for r in folder.running() if r.get("run_id") in ids] if live else []
    walls = [folder.read_result(rid)["runner"]["wall_time_s"] for rid in finished]
    # valid results of configs the definition no longer resolves to (the training presets changed)
    outdated = [e["run_id"] for e in folder.all_results() if e["run_id"] not in ids]
    return {"study": definition.name, "hash": definition.protocol_hash, "folder": str(folder.root), "total": len(ids),
            "finished": len(finished), "failed": len(failed), "running": len(running),
            "left": len(ids) - len(finished) - len(running), "sweep_active": live,
            "mean_run_s": sum(walls) / len(walls) if walls else None,
            "outdated": len(outdated), "running_runs": [r["run_id"] for r in running], "failed_runs": failed}
