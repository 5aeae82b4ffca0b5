"""End to end with the real training engine (smoke preset): a killed sweep resumes; the Ray backend.

These use ``train_and_evaluate`` itself, not a fake: the smoke training preset takes a few seconds
per run on this machine, so each test stays well under two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retina_unet.study import LocalBackend, StudyFolder, preset, run_study, study_status
from retina_unet.study.engine import TrainingEngine
from retina_unet.study.runner import plan_study

REPO = Path(__file__).resolve().parents[1]


def valid_results(out: Path) -> dict[str, tuple[int, bytes]]:
    folder = StudyFolder(out)
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.results.glob("*.json"))
            if folder.read_result(p.stem) is not None}


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid`` that are still running (zombies excluded:
    a reparented dead worker may stay a zombie until the machine's init reaps it). Linux /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def sweep_cmd(out: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "retina_unet.study", "run", "--preset", "smoke", "--out", str(out),
            "--data-root", str(data), "--no-progress", *extra]


@pytest.mark.timeout(300)
def test_a_killed_sweep_loses_nothing_redoes_nothing_counts_no_partial(tmp_path):
    out, data = tmp_path / "study", tmp_path / "data"
    run_ids = [f"{spec.label}-{h}" for spec, h in plan_study(preset("smoke"), TrainingEngine())]
    log = open(tmp_path / "first.log", "w")
    # Two pool workers: killing the sweep must also take its workers down (no orphan commits later).
    proc = subprocess.Popen(sweep_cmd(out, data, "--workers", "2"), cwd=REPO, stdout=log, stderr=log,
                            start_new_session=True)
    deadline = time.time() + 240
    while not valid_results(out) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the sweep process only, as `kill -9 <pid>` would
    proc.wait()
    finished = valid_results(out)
    assert finished, (tmp_path / "first.log").read_text()[-3000:]
    # The workers must die with the sweep: wait (generously) until none of its process group runs.
    # A surviving orphan fails here; one that committed on its way out changes the results below.
    deadline = time.time() + 120
    while (alive := live_group_members(proc.pid)) and time.time() < deadline:
        time.sleep(0.1)
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"workers {alive} outlived the killed sweep by 120 s (orphans could commit results)")
    assert valid_results(out) == finished, "a result was committed after the sweep was killed"
    assert 1 <= len(finished) < len(run_ids), "kill came too late to test anything"
    # Nothing partial is in results/, and a partial/corrupt file planted for an unfinished run is not counted.
    for p in (out / "results").glob("*.json"):
        assert p.name in finished, f"{p.name} is in results/ but not a valid result"
    unfinished = [r for r in run_ids if f"{r}.json" not in finished]
    (out / "results" / f"{unfinished[0]}.json").write_text('{"schema": 1, "status": "ok", "run_id": "' + unfinished[0])
    assert study_status(out)["finished"] == len(finished)

    rerun = subprocess.run(sweep_cmd(out, data, "--workers", "1"), cwd=REPO, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = valid_results(out)
    assert sorted(after) == sorted(f"{r}.json" for r in run_ids)
    for name, (mtime, content) in finished.items():  # not lost, not redone
        assert after[name] == (mtime, content), f"{name} was rewritten"
    last = StudyFolder(out).sweeps()[-1]
    assert (last["skipped"], last["done"], last["failed"]) == (len(finished), len(run_ids) - len(finished), 0)
    assert not StudyFolder(out).interrupted()


@pytest.mark.timeout(300)
def test_ray_backend_runs_the_smoke_study_on_a_local_ray(tmp_path, monkeypatch):
    import ray  # noqa: F401  (a test dependency: missing Ray fails here, it does not skip)

    from retina_unet.study import RayBackend

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    out, data = tmp_path / "study", tmp_path / "data"
    summary = run_study(preset("smoke"), out, backend=RayBackend(num_cpus=2, cpus_per_run=1), data_root=data,
                        progress=False)
    assert summary.complete and len(summary.done) == 4 and not summary.failed
    envs = [json.loads(p.read_text()) for p in (out / "results").glob("*.json")]
    assert {e["runner"]["backend"] for e in envs} == {"ray"}
    assert all(e["result"]["config"]["num_threads"] == 1 for e in envs)
    assert all((out / e["artifacts"] / "out" / "last.pt").exists() for e in envs)
    # The same runs under the local backend: recognised as finished (run ids do not depend on the backend).
    again = run_study(preset("smoke"), out, backend=LocalBackend(1), data_root=data, progress=False)
    assert again.skipped == 4 and not again.done
