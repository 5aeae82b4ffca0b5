"""One run, wherever it executes (this process, a pool worker, a Ray task): resolve, train, commit."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import platform
import resource
import shutil
import signal
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retina_unet.study._hash import stable_hash
from retina_unet.study.definition import RunSpec, StudyError
from retina_unet.study.engine import Engine, identity, set_torch_threads
from retina_unet.study.store import RESULT_SCHEMA, StudyFolder


def config_hash(config: dict[str, Any]) -> str:
    """The run's identity: a hash of its resolved config, without the keys that only say where it runs."""
    return stable_hash(identity(config), 12)


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to execute one run and commit it (plain, picklable fields)."""

    spec: RunSpec
    config_hash: str
    study_root: str
    study_hash: str  # the study's protocol hash (StudyDefinition.protocol_hash)
    data_root: str | None = None
    threads: int | None = None  # torch intra-op threads; None = leave as is
    backend: str = "local"

    @property
    def run_id(self) -> str:
        return f"{self.spec.label}-{self.config_hash}"


def plan(engine: Engine, spec: RunSpec) -> tuple[str, dict[str, Any]]:
    """(config hash, resolved config dict) of a spec; raises the engine's error for a bad config."""
    cfg_dict = engine.config_dict(engine.resolve(spec))
    return config_hash(cfg_dict), cfg_dict


def _folder_here(job: RunJob) -> StudyFolder | None:
    """The study folder when this machine sees it (a shared filesystem), else None."""
    folder = StudyFolder(job.study_root)
    try:
        definition = folder.load_definition()
    except StudyError:
        return None
    return folder if definition is not None and definition.protocol_hash == job.study_hash else None


def execute_run(job: RunJob, engine: Engine) -> dict[str, Any]:
    """Train and evaluate one run; return its envelope (``status`` "ok" or "failed"), never raise.

    When the study folder is visible here the run works in ``work/<run_id>`` and commits
    itself (artefacts, then the result file). Otherwise (a Ray node without the shared folder) it
    works in a temporary folder and the driver writes the returned envelope.
    """
    if job.threads:
        set_torch_threads(job.threads)
    folder = _folder_here(job)
    started, cpu0 = time.time(), _cpu_seconds()
    runner = {"backend": job.backend, "host": socket.gethostname(), "threads": job.threads,
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}
    envelope: dict[str, Any] = {"schema": RESULT_SCHEMA, "run_id": job.run_id, "config_hash": job.config_hash,
                                "study_hash": job.study_hash, "spec": dataclasses.asdict(job.spec)}
    work = None
    try:
        cfg = engine.resolve(job.spec)
        cfg_dict = engine.config_dict(cfg)
        got = config_hash(cfg_dict)
        if got != job.config_hash:
            raise StudyError(f"run {job.spec.label}: this worker resolves the config to hash {got}, the driver to "
                             f"{job.config_hash}; driver and worker run different code versions")
        if folder is not None:
            work = folder.work_dir(job.run_id, {"backend": job.backend})
        else:
            work = Path(tempfile.mkdtemp(prefix=f"{job.run_id}."))
        result = engine.run(cfg, work / "out", Path(job.data_root) if job.data_root else None, job.threads)
        wall = time.time() - started
        # cpu_s: CPU seconds of this process (all threads) during the run; with one thread per run,
        # about the wall time the run would take on an otherwise idle core (sizing on a busy machine).
        envelope.update(status="ok", config=cfg_dict, result=result,
                        runner={**runner, "wall_time_s": wall, "cpu_s": _cpu_seconds() - cpu0,
                                "platform": platform.platform(), "cpu": _cpu_model(), "cpus": os.cpu_count()})
        if folder is not None:
            folder.commit(work, envelope)
            envelope = folder.read_result(job.run_id, job.config_hash) or envelope
        else:
            envelope["artifacts"] = None
            shutil.rmtree(work, ignore_errors=True)
        return envelope
    except Exception as exc:  # a failed run is reported and retried next sweep, never counted
        envelope.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                        runner={**runner, "wall_time_s": time.time() - started})
        if work is not None:  # a failure is not resumable: start afresh next time
            shutil.rmtree(work, ignore_errors=True)
        if folder is not None:
            folder.record_failure(envelope)
        return envelope


def _cpu_model() -> str | None:
    """The CPU's model name (Linux), for the report's "machine" line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def die_with_parent() -> None:
    """Linux: have the kernel kill this worker when its parent dies, so a killed sweep leaves no
    orphan that could commit a result behind the next sweep's back."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_init(threads: int | None) -> None:
    die_with_parent()
    if threads:
        set_torch_threads(threads)
