"""``study run --until-resolved``: add seeds, one at a time, where the paper's claims are still open.

Each round runs what the folder still lacks, checks the findings
(:func:`retina_unet.study.report.findings.check_findings`) on the finished results, and, for every
claim that is unresolved (its interval spans the threshold, or it has one seed only), adds ONE new
seed to the cells that decide it -- the (task, dim, model, n_train) it reads -- with the same new seed
in all of them, so the new runs stay paired. Finished runs are never redone. It stops when every
measured claim is resolved (supported or contradicted), when every open claim's cells hold
``max_seeds`` seeds, or when a run fails; the reason is written to the study's history (and so
into the report).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from retina_unet.study.definition import StudyDefinition, StudyError
from retina_unet.study.engine import Engine, TrainingEngine
from retina_unet.study.report.findings import NOT_MEASURED, RESOLVED, Finding, check_findings
from retina_unet.study.report.tables import result_rows
from retina_unet.study.runner import SweepSummary, plan_folder, run_study
from retina_unet.study.store import StudyFolder

DEFAULT_MAX_SEEDS = 10


@dataclass
class GrowthSummary:
    rounds: int = 0
    added: list[str] = field(default_factory=list)  # labels of runs added
    stopped: str = ""  # why it stopped
    sweeps: list[SweepSummary] = field(default_factory=list)


def open_findings(findings: list[Finding]) -> list[Finding]:
    """Claims more seeds could resolve: unresolved ones, and "not measured" ones that have cells (the
    models and sizes ran, but with fewer than two seeds)."""
    return [f for f in findings if f.verdict not in RESOLVED and (f.verdict != NOT_MEASURED or f.cells)]


def _seeds_per_cell(envelopes: list[dict[str, Any]]) -> dict[tuple, set[int]]:
    out: dict[tuple, set[int]] = {}
    for env in envelopes:
        s = env["spec"]
        out.setdefault((s["task"], int(s["dim"]), s["model"], int(s["n_train"])), set()).add(int(s["seed"]))
    return out


def next_runs(findings: list[Finding], seeds: dict[tuple, set[int]], max_seeds: int) -> tuple[list[tuple], list[str]]:
    """The runs of the next round: per open claim below ``max_seeds``, one new seed (the same for all its
    cells: one more than the largest seed any of them has) in each of its cells. Returns (runs as
    (task, dim, model, n_train, seed), the claims that got a seed)."""
    runs, grown = [], []
    for f in open_findings(findings):
        have = [seeds.get(c, set()) for c in f.cells]
        if min(len(s) for s in have) >= max_seeds:
            continue
        seed = 1 + max(max(s) for s in have if s)
        runs += [(*c, seed) for c in sorted(f.cells)]
        grown.append(f"{f.key} ({f.where})")
    return list(dict.fromkeys(runs)), grown


def run_until_resolved(definition: StudyDefinition, out: str | os.PathLike[str], *, max_seeds: int = DEFAULT_MAX_SEEDS,
                       max_rounds: int = 100, engine: Engine | None = None, **run_kwargs: Any) -> GrowthSummary:
    """Run the study, then add seeds round by round where claims are open (module docstring)."""
    if max_seeds < 2:
        raise StudyError(f"--max-seeds {max_seeds}: an interval needs at least 2 seeds per cell")
    engine = engine or TrainingEngine()
    folder = StudyFolder(out)
    summary = GrowthSummary()
    while True:
        sweep = run_study(definition, out, engine=engine, **run_kwargs)
        summary.sweeps.append(sweep)
        definition = folder.load_definition()
        if sweep.failed:
            summary.stopped = f"{len(sweep.failed)} run(s) failed ({', '.join(sweep.failed[:3])}); fix and rerun"
            break
        if not sweep.complete:
            summary.stopped = "the sweep did not finish every run (--max-runs or interrupted)"
            break
        current = {f"{spec.label}-{h}" for spec, h in plan_folder(folder, definition, engine)}
        envelopes = [e for e in folder.all_results() if e["run_id"] in current]
        findings = check_findings(result_rows(envelopes))
        still_open = open_findings(findings)
        if not still_open:
            summary.stopped = "every measured claim is resolved (supported or contradicted)"
            break
        if summary.rounds >= max_rounds:
            summary.stopped = f"{max_rounds} rounds done; {len(still_open)} claim(s) still open"
            break
        runs, grown = next_runs(findings, _seeds_per_cell(envelopes), max_seeds)
        if not runs:
            summary.stopped = (f"{len(still_open)} claim(s) still unresolved with {max_seeds} seeds (--max-seeds): "
                               + ", ".join(f"{f.key} ({f.where}): {f.verdict}" for f in still_open))
            break
        summary.rounds += 1
        with folder.lock():
            folder.add_runs(runs, "until-resolved: seeds added",
                            f"round {summary.rounds}: {len(runs)} run(s) for {', '.join(grown)}")
        summary.added += [f"{t}-{d}d-{m}-n{n}-s{s}" for t, d, m, n, s in runs]
        print(f"[study] until-resolved round {summary.rounds}: {len(runs)} run(s) for {', '.join(grown)}",
              file=sys.stderr)
    with folder.lock():
        folder.record_event("until-resolved stopped", f"after {summary.rounds} round(s): {summary.stopped}")
    print(f"[study] until-resolved stopped after {summary.rounds} round(s): {summary.stopped}", file=sys.stderr)
    return summary
