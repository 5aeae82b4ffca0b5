"""Before/after table of `cpu`-preset runs: wall time, CPU time, where the time went, test mAP.

Each side is a folder of run directories named ``<side>_<model>`` (``result.json`` inside) plus an
optional ``<side>_time.txt`` with lines ``<model> wall_s=.. user_s=.. sys_s=..`` (GNU time) and
``cpu.txt`` lines ``<side>_<model> cpu_s=..`` (a poller's reading). With ``--full-eval`` the
after-side's mAP on all test images (``<side>_<model>_full.json``, written by ``evaluate --out``)
is shown too. Prints markdown and writes JSON::

    python -m benchmarks.study.speed_table --dir /tmp/speed --models retina_unet retina_net detunet mask_rcnn \
        --out reports/study_speed/speed.json > reports/study_speed/table.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _times(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if parts and all("=" in p for p in parts[1:]):
                out.setdefault(parts[0], {}).update({k: float(v) for k, v in (p.split("=") for p in parts[1:])})
    return out


def side(folder: Path, name: str, model: str) -> dict | None:
    res_path = folder / f"{name}_{model}" / "result.json"
    if not res_path.is_file():
        return None
    r = json.loads(res_path.read_text())
    t = _times(folder / f"{name}_time.txt").get(model, {})
    cpu = _times(folder / "cpu.txt").get(f"{name}_{model}", {}).get("cpu_s")
    curve = r.get("curve", [])
    row = {
        "mAP": r["mAP"],
        "test_images": r["test"]["n_images"],
        "members": r["test"].get("n_members"),
        "wall_s": t.get("wall_s", r.get("wall_s")),
        "cpu_s": (t["user_s"] + t["sys_s"]) if "user_s" in t else cpu,
        "train_steps_s": sum(e["train_s"] for e in curve),
        "val_s": sum(e["val_s"] for e in curve),
        "test_s": r["test"].get("inference_s"),
        "epochs": len(curve),
        "validated_epochs": sum(e.get("val_mAP") is not None for e in curve),
        "best_epoch": (r.get("top_k") or [{}])[0].get("epoch"),
        "config": {k: r["config"].get(k) for k in ("val_from_epoch", "val_subset", "ensemble_top_k", "test_subset",
                                                    "num_threads", "epochs", "batches_per_epoch")},
        "git_commit": r.get("git_commit"),
    }
    full = folder / f"{name}_{model}_full.json"
    if full.is_file():
        row["mAP_all_test"] = json.loads(full.read_text())["mAP"]
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--sides", nargs=2, default=["before", "after"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    b, a = args.sides
    rows = {m: {b: side(args.dir, b, m), a: side(args.dir, a, m)} for m in args.models}
    print(f"| model | {b}: wall s (CPU s) | {a}: wall s (CPU s) | speed-up wall (CPU) | {b}: train / val / test s "
          f"| {a}: train / val / test s | test mAP {b} (images) | test mAP {a} (images) | {a} on all test images |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, r in rows.items():
        x, y = r[b], r[a]
        if x is None or y is None:
            print(f"| {m} | {'missing' if x is None else ''} | {'missing' if y is None else ''} | | | | | | |")
            continue

        def cpu(v):
            return f"{v:.0f}" if v else "n/a"

        sp_cpu = f"{x['cpu_s'] / y['cpu_s']:.2f}x" if x["cpu_s"] and y["cpu_s"] else "n/a"
        full = f"{y['mAP_all_test']:.3f}" if "mAP_all_test" in y else "n/a"
        print(f"| {m} | {x['wall_s']:.0f} ({cpu(x['cpu_s'])}) | {y['wall_s']:.0f} ({cpu(y['cpu_s'])}) | "
              f"{x['wall_s'] / y['wall_s']:.2f}x ({sp_cpu}) | "
              f"{x['train_steps_s']:.0f} / {x['val_s']:.0f} / {x['test_s']:.0f} | "
              f"{y['train_steps_s']:.0f} / {y['val_s']:.0f} / {y['test_s']:.0f} | {x['mAP']:.3f} ({x['test_images']}) | "
              f"{y['mAP']:.3f} ({y['test_images']}) | {full} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
