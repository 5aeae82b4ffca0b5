"""The study folder: one definition, one result file per finished run, nothing that looks finished early.

Layout::

    <root>/study.json               the protocol (training preset, overrides: fixed), the grid (may grow),
                                    extra runs added by --until-resolved, and the history of extensions
    <root>/results/<run_id>.json    one finished run (the only thing that counts as finished)
    <root>/runs/<run_id>/           the engine's artefacts of that run (checkpoints, predictions)
    <root>/work/<run_id>/           a run in progress or killed (RUNNING marker + engine out_dir with its
                                    checkpoints: a rerun resumes there); never counted
    <root>/failed/<run_id>.json     the last failure of a run (traceback); retried on the next sweep
    <root>/.lock                    held by the one sweep allowed to write here

A run commits in two steps: its work folder is renamed to ``runs/<run_id>``, then its result file is
written to a temporary name and ``os.replace``d into ``results/``. A kill at any point leaves either
no result file or a complete one; :meth:`StudyFolder.read_result` also rejects a result file that is
truncated, from another config, or not a success, so such a file is redone and never counted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from retina_unet.atomic_io import write_json_atomic
from retina_unet.environment import git_commit  # noqa: F401  (re-exported: the study's code version)
from retina_unet.study.definition import RunSpec, StudyDefinition, StudyError

RESULT_SCHEMA = 1
STUDY_FILE_SCHEMA = 2  # study.json: 1 = definition only; 2 = + protocol hash, extra runs, history


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _grid_text(d: StudyDefinition) -> str:
    return (f"{len(d.runs())} runs: tasks {list(d.tasks)}, models {list(d.models)}, n_train {list(d.n_train)}, "
            f"seeds {list(d.seeds)}, dims {list(d.dims)}")


def _added_text(added: dict[str, list[Any]]) -> str:
    return "; ".join(f"{k} {v}" for k, v in added.items())
MAP_KEY = "mAP"  # the test mAP in the training engine's result


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    return str(obj)


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _relocate(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, str):
        return new + obj[len(old):] if obj.startswith(old) else obj
    if isinstance(obj, dict):
        return {k: _relocate(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relocate(v, old, new) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` so that readers see the old file or the whole new one."""
    write_json_atomic(path, obj, indent=1, sort_keys=True, default=_json_default)


class StudyFolder:
    """Paths and bookkeeping of one study folder (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.study_json = self.root / "study.json"
        self.results = self.root / "results"
        self.runs = self.root / "runs"
        self.work = self.root / "work"
        self.failed = self.root / "failed"

    # -- the definition ------------------------------------------------------------------------
    def _doc(self) -> dict[str, Any] | None:
        if not self.study_json.exists():
            return None
        try:
            doc = json.loads(self.study_json.read_text())
            definition = StudyDefinition.from_dict(doc["definition"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StudyError(f"{self.study_json} is unreadable ({exc}); it is not a study folder or it "
                             "was damaged: use another folder") from exc
        if doc.get("hash") != definition.hash:
            raise StudyError(f"{self.study_json}: stored hash {doc.get('hash')} does not match its definition "
                             f"({definition.hash}); the file was edited or written by another version")
        doc["_definition"] = definition
        return doc

    def load_definition(self) -> StudyDefinition | None:
        """The folder's grid (grown by every extension so far) and protocol, or None (not a study folder)."""
        doc = self._doc()
        return None if doc is None else doc["_definition"]

    def history(self) -> list[dict[str, Any]]:
        """Every extension of the study (grid grown, seeds added by --until-resolved, where it stopped)."""
        doc = self._doc()
        return list(doc.get("history", [])) if doc else []

    def extra_runs(self) -> list[tuple[str, int, str, int, int]]:
        """Runs added outside the product grid (by --until-resolved): (task, dim, model, n_train, seed)."""
        doc = self._doc()
        return [tuple(r) for r in doc.get("extra_runs", [])] if doc else []

    def planned_specs(self, definition: StudyDefinition | None = None) -> list[RunSpec]:
        """Every run of the study: the product grid (seed-major) then the extra runs, no duplicates."""
        definition = definition or self.load_definition()
        if definition is None:
            return []
        specs = definition.runs()
        seen = {s.label for s in specs}
        for task, dim, model, n, seed in sorted(self.extra_runs(), key=lambda r: (r[4], r[1], -r[3], r[0], r[2])):
            spec = RunSpec(task, dim, model, n, seed, definition.train_preset, definition.overrides)
            if spec.label not in seen:
                seen.add(spec.label)
                specs.append(spec)
        return specs

    def check_definition(self, definition: StudyDefinition) -> None:
        """Raise when the folder holds a study of another protocol (training preset or overrides: every
        run would compute something else), or is not a study folder but is not empty. A grid with more
        tasks, models, sizes, seeds or dims than the folder's grows the study (see :meth:`initialise`)."""
        existing = self.load_definition()
        if existing is not None:
            if existing.protocol_hash != definition.protocol_hash:
                ours, theirs = definition.protocol(), existing.protocol()
                diff = ", ".join(f"{k}: folder has {theirs[k]!r}, asked {ours[k]!r}" for k in ours if ours[k] != theirs[k])
                raise StudyError(
                    f"{self.root} holds study {existing.name!r} run with another protocol (protocol {existing.protocol_hash},"
                    f" asked {definition.protocol_hash}): {diff}. These settings change every run's result, so the "
                    "finished runs cannot be reused; nothing was changed. Use another --out folder, or rerun with "
                    "the folder's own settings (a grid with more tasks, models, sizes or seeds grows the study)."
                )
        elif self.root.exists() and any(p.name != ".lock" for p in self.root.iterdir()):
            raise StudyError(f"{self.root} exists, is not empty and has no study.json: refusing to write into it")

    def _write_doc(self, definition: StudyDefinition, extra: list, history: list, created: str) -> None:
        atomic_write_json(self.study_json, {
            "schema": STUDY_FILE_SCHEMA, "hash": definition.hash, "protocol_hash": definition.protocol_hash,
            "definition": definition.to_dict(), "extra_runs": [list(r) for r in extra], "history": history,
            "created": created})

    def initialise(self, definition: StudyDefinition) -> StudyDefinition:
        """Create the folder, or grow its grid to the union with ``definition`` (recorded in the
        history); returns the folder's definition after that. Call with the lock held."""
        self.check_definition(definition)
        for d in (self.results, self.runs, self.work, self.failed):
            d.mkdir(parents=True, exist_ok=True)
        doc = self._doc()
        if doc is None:
            now = _now()
            self._write_doc(definition, [], [{"event": "created", "time": now, "summary": _grid_text(definition)}], now)
            return definition
        existing = doc["_definition"]
        added = existing.added_by(definition)
        if not added:
            return existing
        merged = existing.union(definition)
        new_runs = len(merged.runs()) - len(existing.runs())
        history = [*doc.get("history", []), {"event": "grid extended", "time": _now(), "added": added,
                                             "summary": f"added {_added_text(added)} ({new_runs} runs)"}]
        self._write_doc(merged, doc.get("extra_runs", []), history, doc.get("created", _now()))
        return merged

    def add_runs(self, runs: list[tuple[str, int, str, int, int]], event: str, summary: str) -> int:
        """Add runs outside the product grid (task, dim, model, n_train, seed); returns how many were new.
        Recorded in the history. Call with the lock held."""
        doc = self._doc()
        if doc is None:
            raise StudyError(f"{self.root} is not a study folder (no study.json)")
        have = {s.label for s in self.planned_specs(doc["_definition"])}
        extra = [list(r) for r in doc.get("extra_runs", [])]
        d = doc["_definition"]
        new = [r for r in dict.fromkeys(tuple(r) for r in runs)
               if RunSpec(*r, d.train_preset, d.overrides).label not in have]
        extra += [list(r) for r in new]
        self.record_event(event, summary, doc=doc, extra=extra)
        return len(new)

    def record_event(self, event: str, summary: str, doc: dict | None = None, extra: list | None = None) -> None:
        """Append an entry to the study's history (call with the lock held)."""
        doc = doc or self._doc()
        if doc is None:
            raise StudyError(f"{self.root} is not a study folder (no study.json)")
        history = [*doc.get("history", []), {"event": event, "time": _now(), "summary": summary}]
        self._write_doc(doc["_definition"], doc.get("extra_runs", []) if extra is None else extra, history,
                        doc.get("created", _now()))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock: one sweep writes to a folder at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StudyError(f"another sweep is running on {self.root} (its .lock is held); wait for it "
                                 "or stop it first") from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def is_locked(self) -> bool:
        if not (self.root / ".lock").exists():
            return False
        with open(self.root / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    # -- results -------------------------------------------------------------------------------
    def result_path(self, run_id: str) -> Path:
        return self.results / f"{run_id}.json"

    def read_result(self, run_id: str, config_hash: str | None = None) -> dict[str, Any] | None:
        """The run's result envelope when it is complete and valid, else None (missing, partial, foreign)."""
        try:
            env = json.loads(self.result_path(run_id).read_text())
        except (OSError, ValueError):
            return None
        ok = (
            isinstance(env, dict)
            and env.get("schema") == RESULT_SCHEMA
            and env.get("status") == "ok"
            and env.get("run_id") == run_id
            and (config_hash is None or env.get("config_hash") == config_hash)
            and isinstance(env.get("result"), dict)
            and isinstance(env["result"].get(MAP_KEY), (int, float))
        )
        return env if ok else None

    def all_results(self) -> list[dict[str, Any]]:
        """Every valid result envelope in the folder (the report's input)."""
        out = []
        for path in sorted(self.results.glob("*.json")):
            env = self.read_result(path.stem)
            if env is not None:
                out.append(env)
        return out

    def write_result(self, envelope: dict[str, Any]) -> Path:
        path = self.result_path(envelope["run_id"])
        atomic_write_json(path, envelope)
        return path

    # -- work in progress ----------------------------------------------------------------------
    def work_dir(self, run_id: str, info: dict[str, Any]) -> Path:
        """The run's work folder, kept across kills so the engine can resume from its checkpoints."""
        work = self.work / run_id
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(work / "RUNNING", {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                                             "started": time.time(), **info})
        return work

    def interrupted(self) -> list[str]:
        """Run ids with a work folder but no result (while no sweep holds the lock: killed runs)."""
        if not self.work.exists():
            return []
        return sorted(d.name for d in self.work.iterdir() if d.is_dir() and self.read_result(d.name) is None)

    def running(self) -> list[dict[str, Any]]:
        """RUNNING markers of runs whose process is alive (or on another host, where we cannot tell)."""
        out = []
        if self.work.exists():
            for marker in self.work.glob("*/RUNNING"):
                with contextlib.suppress(OSError, ValueError):
                    info = json.loads(marker.read_text())
                    if info.get("host") != socket.gethostname() or _alive(info.get("pid")):
                        out.append(info)
        return out

    def commit(self, work: Path, envelope: dict[str, Any]) -> Path:
        """Move the work folder's artefacts to ``runs/<run_id>``, then write the result file (last)."""
        run_id = envelope["run_id"]
        final = self.runs / run_id
        if final.exists():  # artefacts of an earlier attempt whose result was never written
            shutil.rmtree(final)
        (work / "RUNNING").unlink(missing_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, final)
        rel = str(final.relative_to(self.root))
        # Paths the engine returned point into the work folder; make them relative to the study root.
        envelope = {**_relocate(envelope, str(work), rel), "artifacts": rel}
        (self.failed / f"{run_id}.json").unlink(missing_ok=True)
        return self.write_result(envelope)

    def log_sweep(self, entry: dict[str, Any]) -> None:
        """Append one line per sweep (command, commit, wall time): the report's provenance."""
        with open(self.root / "sweeps.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, default=_json_default) + "\n")

    def sweeps(self) -> list[dict[str, Any]]:
        out = []
        with contextlib.suppress(OSError):
            for line in (self.root / "sweeps.jsonl").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def record_failure(self, envelope: dict[str, Any]) -> None:
        atomic_write_json(self.failed / f"{envelope['run_id']}.json", envelope)

    def failures(self) -> list[dict[str, Any]]:
        out = []
        if self.failed.exists():
            for path in sorted(self.failed.glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    out.append(json.loads(path.read_text()))
        return out
