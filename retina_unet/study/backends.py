"""Where runs execute: this machine (sequential or a process pool) or a Ray cluster.

Each backend keeps at most ``concurrency`` runs in flight, so "running" in the progress view is
what actually runs, and an interrupted sweep has little queued work to cancel.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from retina_unet.study.definition import StudyError
from retina_unet.study.engine import Engine
from retina_unet.study.execute import RunJob, execute_run, worker_init

Started = Callable[[RunJob], None]
Finished = Callable[[RunJob, dict[str, Any]], None]


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class LocalBackend:
    """Runs on this machine: ``workers`` processes with ``threads`` torch threads each.

    Default: ``workers = max(1, cpus // threads)``. One worker runs in this process (simplest to debug
    and to interrupt); more use a spawn-started process pool whose workers die with this process.
    """

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        cpus = cpu_count()
        self.threads = 1 if threads is None else threads
        self.workers = max(1, cpus // max(1, self.threads)) if workers is None else workers
        if self.workers < 1 or self.threads < 1:
            raise StudyError(f"workers ({self.workers}) and threads per run ({self.threads}) must be >= 1")

    @property
    def concurrency(self) -> int:
        return self.workers

    def describe(self) -> str:
        return f"local: {self.workers} worker(s) x {self.threads} torch thread(s) ({cpu_count()} cpus)"

    def execute(self, jobs: Sequence[RunJob], engine: Engine, started: Started, finished: Finished) -> None:
        if self.workers == 1:
            for job in jobs:
                started(job)
                finished(job, execute_run(job, engine))
            return
        ctx = multiprocessing.get_context("spawn")  # torch + fork is unsafe
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=worker_init, initargs=(self.threads,))
        queue, inflight = list(jobs), {}
        # A KeyboardInterrupt raised at an arbitrary point inside concurrent.futures (e.g. while
        # wait() holds a future's lock) can leave the executor's manager thread blocked and hang
        # the interpreter at exit. So Ctrl-C only sets a flag, and the loop raises at a safe point.
        interrupted = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
        try:
            while queue or inflight:
                while queue and len(inflight) < self.workers and not interrupted.is_set():
                    job = queue.pop(0)
                    started(job)
                    inflight[pool.submit(execute_run, job, engine)] = job
                if interrupted.is_set():
                    raise KeyboardInterrupt
                done, _ = wait(inflight, timeout=0.2, return_when=FIRST_COMPLETED)
                for fut in done:
                    finished(inflight.pop(fut), fut.result())
            if interrupted.is_set():  # Ctrl-C as the last run finished: still an interruption
                raise KeyboardInterrupt
        except BaseException:
            # Ctrl-C / an error here: stop the workers now instead of waiting for their runs (their
            # work folders stay; the next sweep resumes them).
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        pool.shutdown(wait=True)


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def _ray_execute(job: RunJob, engine: Engine) -> dict[str, Any]:
    return execute_run(job, engine)


class RayBackend:
    """One Ray task per run, each asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.

    ``address=None`` starts a local Ray instance (``num_cpus`` CPUs, default all) and stops it at the
    end; ``address="auto"`` or ``"ray://host:10001"`` joins a cluster. Runs commit themselves when
    the node sees the study folder (shared filesystem); otherwise the driver writes their results.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_run: float = 1, gpus_per_run: float = 0,
                 num_cpus: int | None = None, max_concurrent: int | None = None):
        try:
            import ray  # noqa: F401
        except ImportError as exc:
            raise StudyError("the ray backend needs Ray: pip install 'ray>=2.9' (or the project's [ray] extra)") from exc
        if cpus_per_run <= 0 or gpus_per_run < 0:
            raise StudyError(f"cpus per run must be > 0 and gpus per run >= 0, got {cpus_per_run}, {gpus_per_run}")
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run
        self.num_cpus, self.max_concurrent = num_cpus, max_concurrent
        self._concurrency = max_concurrent or 1

    @property
    def concurrency(self) -> int:
        return self._concurrency

    def describe(self) -> str:
        where = self.address or f"a local instance ({self.num_cpus or cpu_count()} cpus)"
        limit = f"at most {self.max_concurrent}" if self.max_concurrent else "as many as fit"
        return f"ray on {where}: {self.cpus_per_run} cpu / {self.gpus_per_run} gpu per run, {limit} at a time"

    def _start(self) -> bool:
        import ray

        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                  "log_to_driver": True}
        if self.address is None:
            kwargs["num_cpus"] = self.num_cpus or cpu_count()
        else:
            kwargs["address"] = self.address
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            if self.address is None:
                raise StudyError(f"could not start a local Ray instance: {_first_line(exc)}") from None
            raise StudyError(
                f"no Ray cluster answered at --address {self.address} ({_first_line(exc)}); start one "
                f"(`ray start --head` on the head node) or omit --address to start a local instance"
            ) from None
        res = ray.cluster_resources()
        slots = int(res.get("CPU", 1) // self.cpus_per_run)
        if self.gpus_per_run:
            slots = min(slots, int(res.get("GPU", 0) // self.gpus_per_run))
        if slots < 1:
            ray.shutdown()
            raise StudyError(f"the Ray cluster ({res}) cannot fit one run needing {self.cpus_per_run} cpu and "
                             f"{self.gpus_per_run} gpu")
        self._concurrency = min(self.max_concurrent or slots, slots)
        print(f"[study] ray cluster {dict(res)}: {self._concurrency} run(s) at a time", file=sys.stderr)
        return True

    def execute(self, jobs: Sequence[RunJob], engine: Engine, started: Started, finished: Finished) -> None:
        import ray

        we_started = self._start()
        try:
            remote = ray.remote(_ray_execute).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run,
                                                      max_retries=0)
            engine_ref = ray.put(engine)
            queue, inflight = list(jobs), {}
            try:
                while queue or inflight:
                    while queue and len(inflight) < self._concurrency:
                        job = queue.pop(0)
                        started(job)
                        inflight[remote.remote(job, engine_ref)] = job
                    done, _ = ray.wait(list(inflight), num_returns=1)
                    for ref in done:
                        job = inflight.pop(ref)
                        try:
                            env = ray.get(ref)
                        except Exception as exc:  # the task died (node lost, OOM kill): a failed run
                            env = {"run_id": job.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                   "runner": {"wall_time_s": 0.0, "backend": "ray"}}
                        finished(job, env)
            except BaseException:
                for ref in inflight:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if we_started:
                ray.shutdown()
