"""The runner's bookkeeping with a fake engine: resume, skip, atomicity, bad input, backends' plumbing."""

from __future__ import annotations

import json
import os
import threading

import pytest

from retina_unet.study import LocalBackend, StudyDefinition, StudyError, StudyFolder, run_study, study_status
from retina_unet.study.cli import main as study_main
from retina_unet.study.store import atomic_write_json
from retina_unet.study.testing import FakeEngine, read_log


def small(**kw) -> StudyDefinition:
    base = dict(name="t", tasks=("donuts_shape",), models=("retina_net", "retina_unet"), n_train=(100, 20),
                seeds=(0,), dims=(2,), train_preset="smoke")
    return StudyDefinition(**{**base, **kw})


def snapshot(root) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted((root / "results").glob("*.json"))}


def run(defn, out, engine=None, **kw):
    return run_study(defn, out, engine=engine or FakeEngine(), backend=kw.pop("backend", LocalBackend(1)),
                     progress=False, **kw)


def test_a_study_writes_one_named_result_per_run(tmp_path):
    out = tmp_path / "s"
    summary = run(small(), out)
    assert summary.complete and len(summary.done) == 4 and not summary.failed
    names = sorted(p.name for p in (out / "results").glob("*.json"))
    assert len(names) == 4
    assert names[0].startswith("donuts_shape-2d-retina_net-n100-s0-") and len(names[0].split("-")[-1]) == len("0123456789ab.json")
    env = json.loads((out / "results" / names[0]).read_text())
    assert env["status"] == "ok" and env["spec"]["model"] == "retina_net" and env["study_hash"] == small().protocol_hash
    assert env["result"]["checkpoint"].startswith("runs/")  # engine paths relocated into the study folder
    assert (out / env["result"]["checkpoint"]).exists() and not any((out / "work").iterdir())
    assert json.loads((out / "study.json").read_text())["hash"] == small().hash
    assert env["runner"]["threads"] == 1 and env["result"]["threads"] == 1


def test_rerun_skips_finished_runs_and_rewrites_nothing(tmp_path):
    out, log = tmp_path / "s", tmp_path / "log"
    run(small(), out, FakeEngine(log=str(log)))
    before = snapshot(out)
    summary = run(small(), out, FakeEngine(log=str(log)))
    assert summary.skipped == 4 and not summary.done
    assert snapshot(out) == before and len(read_log(log)) == 4


def test_partial_corrupt_or_foreign_results_are_redone_never_counted(tmp_path):
    out = tmp_path / "s"
    run(small(), out)
    folder = StudyFolder(out)
    files = sorted((out / "results").glob("*.json"))
    files[0].write_text(files[0].read_text()[:50])  # truncated
    bad = json.loads(files[1].read_text())
    bad["config_hash"] = "000000000000"  # from another config
    files[1].write_text(json.dumps(bad))
    failed = json.loads(files[2].read_text())
    failed["status"] = "failed"
    files[2].write_text(json.dumps(failed))
    assert len(folder.all_results()) == 2 - 1 + 1  # the foreign-hash file still parses as a result of its id...
    assert study_status(out, FakeEngine())["finished"] == 1  # ...but is not counted for this config
    log = tmp_path / "log"
    summary = run(small(), out, FakeEngine(log=str(log)))
    assert len(summary.done) == 3 and summary.skipped == 1 and len(read_log(log)) == 3
    assert study_status(out, FakeEngine())["finished"] == 4


def test_a_different_definition_is_refused_and_nothing_is_overwritten(tmp_path):
    out = tmp_path / "s"
    run(small(), out)
    before, study = snapshot(out), (out / "study.json").read_bytes()
    with pytest.raises(StudyError, match="holds study 't' run with another protocol.*train_preset: folder has 'smoke'"):
        run(small(train_preset="cpu"), out)
    with pytest.raises(StudyError, match="overrides: folder has"):
        run(small(overrides={"epochs": 3}), out)
    assert snapshot(out) == before and (out / "study.json").read_bytes() == study


def test_a_foreign_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(StudyError, match="not empty and has no study.json"):
        run(small(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


@pytest.mark.parametrize("change, message", [
    (dict(models=("retina_net", "yolo")), "unknown model"),
    (dict(tasks=("squares",)), "unknown task"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(StudyError, match=message):
        run(small(**change), tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_training_size_larger_than_the_resolved_pool_is_refused(tmp_path):
    with pytest.raises(StudyError, match=r"n_train 100 is larger than the training pool \(50 images\)"):
        run(small(), tmp_path / "s", FakeEngine(pool_size=50))
    assert not (tmp_path / "s").exists()


def test_failed_runs_are_recorded_not_counted_and_retried(tmp_path):
    out = tmp_path / "s"
    summary = run(small(), out, FakeEngine(fail=("donuts_shape-2d-retina_net-n20-s0",)))
    assert len(summary.failed) == 1 and len(summary.done) == 3 and not summary.complete
    failure = json.loads(next((out / "failed").glob("*.json")).read_text())
    assert "fake failure" in failure["error"] and "Traceback" in failure["traceback"]
    assert study_status(out, FakeEngine())["failed"] == 1
    summary = run(small(), out)
    assert summary.done == [failure["run_id"]] and not any((out / "failed").iterdir())


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"v": 1})

    def boom(fd):  # the new content is written and flushed, but not yet renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary left behind


def test_an_interrupted_run_is_resumed_from_its_work_folder_not_counted(tmp_path):
    out = tmp_path / "s"
    run(small(), out, max_runs=1)
    folder = StudyFolder(out)
    # Simulate a run killed mid-training: a work folder with a checkpoint, no result.
    label = small().runs()[1].label
    from retina_unet.study.execute import plan

    run_id = f"{label}-{plan(FakeEngine(), small().runs()[1])[0]}"
    (folder.work / run_id / "out").mkdir(parents=True)
    (folder.work / run_id / "out" / "last.pt").write_text("half-trained")
    st = study_status(out, FakeEngine())
    assert st["finished"] == 1 and st["running"] == 0 and folder.interrupted() == [run_id]
    summary = run(small(), out)
    assert summary.skipped == 1 and run_id in summary.done and not folder.interrupted()


def test_one_sweep_per_folder(tmp_path):
    out = tmp_path / "s"
    run(small(), out, max_runs=1)
    folder, entered, release = StudyFolder(out), threading.Event(), threading.Event()

    def hold():
        with folder.lock():
            entered.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    entered.wait(10)
    try:
        assert folder.is_locked()
        with pytest.raises(StudyError, match="another sweep is running"):
            run(small(), out)
    finally:
        release.set()
        t.join()


def test_process_pool_backend(tmp_path):
    out, log = tmp_path / "s", tmp_path / "log"
    backend = LocalBackend(workers=2, threads=1)
    summary = run(small(), out, FakeEngine(delay=0.2, log=str(log)), backend=backend)
    assert summary.complete and len(summary.done) == 4
    assert len({line for line in read_log(log)}) == 4
    pids = {json.loads(x)["pid"] for x in log.read_text().splitlines()}
    assert os.getpid() not in pids


def test_default_local_backend_is_sized_to_the_machine():
    from retina_unet.study.backends import cpu_count

    assert LocalBackend().workers == max(1, cpu_count())
    assert LocalBackend(threads=2).workers == max(1, cpu_count() // 2)
    with pytest.raises(StudyError):
        LocalBackend(workers=0)


def test_cli_errors_are_clear_and_exit_2(tmp_path, capsys):
    assert study_main(["run", "--preset", "smoke", "--models", "yolo", "--out", str(tmp_path / "s")]) == 2
    assert "unknown model(s) ['yolo']" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert study_main(["run", "--preset", "smoke", "--n-train", "5000", "--out", str(tmp_path / "s")]) == 2
    assert "n_train=5000 is larger than the train pool (32)" in capsys.readouterr().err
    assert study_main(["presets"]) == 0 and "quick:" in capsys.readouterr().out


def test_status_on_a_fake_study(tmp_path):
    out = tmp_path / "s"
    run(small(), out, max_runs=3)
    st = study_status(out, FakeEngine())
    assert (st["total"], st["finished"], st["left"], st["running"], st["sweep_active"]) == (4, 3, 1, 0, False)


def test_ctrl_c_stops_a_pool_sweep_at_once_and_leaves_nothing_finished(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "s"
    # As at a terminal: a background job (e.g. `nohup ... &`) inherits SIGINT ignored.
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from retina_unet.study import *; from retina_unet.study.testing import FakeEngine; "
            "d = StudyDefinition(name='t', tasks=('donuts_shape',), models=('retina_net', 'retina_unet'), "
            "n_train=(20,), seeds=(0,)); "
            f"run_study(d, {str(out)!r}, engine=FakeEngine(delay=3600), backend=LocalBackend(2, 1), progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180  # spawned workers import torch: slow on a cold clean checkout
        while len(list((out / "work").glob("*/out/last.pt"))) < 2 and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)
        assert len(list((out / "work").glob("*/out/last.pt"))) == 2, "the two runs never started"
        proc.send_signal(signal.SIGINT)
        # The runs take an hour: a sweep that waited for them times out here (generous: a slow
        # machine still has minutes to stop), and one that let them finish would leave results.
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail("the sweep did not stop within 300 s of Ctrl-C (it waits for its runs)")
        assert proc.returncode != 0, "an interrupted sweep must not exit 0"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not list((out / "results").glob("*.json"))
    assert len(StudyFolder(out).interrupted()) == 2  # resumable work folders, not results


def test_progress_counts_and_eta():
    from retina_unet.study.progress import SweepProgress, format_seconds

    p = SweepProgress(total=10, already_done=2, concurrency=2, enabled=False)
    assert p.eta() is None
    p.started_run()
    p.started_run()
    assert (p.done, p.running, p.left) == (2, 2, 6)
    p.finished_run("a", True, 100.0)
    p.finished_run("b", False, 5.0)
    assert (p.done, p.failed, p.running, p.left) == (3, 1, 0, 6)
    assert p.eta() == 100.0 * 6 / 2  # mean of successful runs x runs left / concurrency
    assert format_seconds(3725) == "1h02m" and format_seconds(65) == "1m05s"
    p.close()


def test_ray_without_a_cluster_is_one_line_and_records_no_sweep(tmp_path, monkeypatch, capsys):
    ray = pytest.importorskip("ray")
    from retina_unet.cli import main as package_main
    from retina_unet.study import RayBackend

    def no_cluster(*args, **kwargs):  # what ray.init(address="auto") raises when nothing runs
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to "
                              "by setting `--address` flag or `RAY_ADDRESS` environment variable.")

    monkeypatch.setattr(ray, "init", no_cluster)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    out = tmp_path / "s"
    with pytest.raises(StudyError, match="no Ray cluster answered at --address auto"):
        run(small(), out, backend=RayBackend("auto"))
    assert StudyFolder(out).sweeps() == [] and not list((out / "results").glob("*.json"))
    capsys.readouterr()
    rc = package_main(["study", "run", "--preset", "smoke", "--backend", "ray", "--address", "auto",
                       "--out", str(tmp_path / "s2"), "--no-progress"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "no Ray cluster answered at --address auto" in lines[0]
    assert "Traceback" not in err and StudyFolder(tmp_path / "s2").sweeps() == []


def test_ctrl_c_in_study_run_says_what_was_kept_and_how_to_resume(tmp_path, monkeypatch, capsys):
    from retina_unet.study import runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_study", interrupted)
    out = tmp_path / "s"
    assert study_main(["run", "--preset", "smoke", "--out", str(out), "--no-progress"]) == 130
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and f"finished runs are kept in {out}/runs" in err[0] and "rerun the same command" in err[0]


def test_progress_bar_count_never_runs_ahead_of_done(capsys):
    """Every drawn frame shows the same number in the bar's count and in "done" (plain stderr, no tty)."""
    import re

    from retina_unet.study.progress import SweepProgress

    p = SweepProgress(total=4, already_done=1, concurrency=1, enabled=True)
    print("[study] ray cluster {...}: 1 run(s) at a time", file=__import__("sys").stderr)  # backend line
    for label, ok in (("a", True), ("b", False), ("c", True)):
        p.started_run()
        p.finished_run(label, ok, 1.0)
    p.close()
    err = capsys.readouterr().err
    assert err.startswith("[study] ray cluster")  # nothing of the bar was drawn before the backend line
    frames = [f for f in re.split(r"[\r\n]", err) if re.search(r"\d+/4", f)]
    assert frames
    for f in frames:
        count = int(re.search(r"(\d+)/4", f).group(1))
        assert f"done {count} " in f, f
    assert "done 3 " in frames[-1] and "3/4" in frames[-1]


def test_a_users_report_goes_under_the_study_folder_not_reports(tmp_path, monkeypatch, capsys):
    """`study report` / `study run --report` never rewrite the committed reports/<name> by default."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "studies" / "t"
    run(small(), out)
    assert study_main(["report", "--out", str(out), "--examples", "0"]) == 0
    assert (out / "report" / "README.md").is_file() and not (tmp_path / "reports").exists()
    assert study_main(["report", "--out", str(out), "--report-dir", str(tmp_path / "reports" / "t")]) == 0
    assert (tmp_path / "reports" / "t" / "README.md").is_file()  # the reference, only when asked
