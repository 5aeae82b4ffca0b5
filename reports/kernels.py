"""Turn kernel-benchmark results (pytest-benchmark JSON) into tables and plots.

Benchmarks name their group per workload, ``"op|D=3|N=5000|sparse"`` (``key=value`` parameters and
bare tags), and put the implementation in ``extra_info["impl"]`` (``ours``, ``torchvision``,
``monai``, ``grid_sample``, ``reference``). This command writes:

- ``kernels.csv``: one row per (workload, implementation) with the median time and its speed-up
  ``time(impl) / time(ours)`` (> 1 means ours is faster), measured in the same run;
- ``time_vs_size_<op>.png``: time against N (or K) per implementation, one panel per D and tag;
- ``speedup.png``: the speed-up of ours over each peer per workload;
- optionally a Markdown table (``--markdown``).

Usage: ``python -m reports.kernels --json reports/kernels/bench_cpu.json --out reports/kernels``
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    group: str
    op: str
    params: dict
    tags: tuple[str, ...]
    impl: str
    median_s: float
    rounds: int
    speedup: float  # time(impl) / time(ours) in this group; nan when ours is absent


def parse_group(group: str) -> tuple[str, dict, tuple[str, ...]]:
    """``"nms|D=3|N=5000|sparse"`` -> ``("nms", {"D": 3, "N": 5000}, ("sparse",))``."""
    op, *parts = group.split("|")
    params, tags = {}, []
    for part in parts:
        if "=" in part:
            key, value = part.split("=", 1)
            params[key] = int(value) if value.isdigit() else value
        else:
            tags.append(part)
    return op, params, tuple(tags)


def load_rows(paths: list[Path]) -> tuple[list[Row], dict]:
    """Read one or more pytest-benchmark JSON files into rows with per-group speed-ups."""
    by_group: dict[str, dict[str, tuple[float, int]]] = {}
    machine = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        machine = {**data.get("machine_info", machine), "commit": (data.get("commit_info") or {}).get("id", ""),
                   "datetime": data.get("datetime", "")}
        for bench in data.get("benchmarks", []):
            group = bench.get("group") or bench["name"]
            impl = (bench.get("extra_info") or {}).get("impl", bench["name"])
            stats = bench["stats"]
            by_group.setdefault(group, {})[impl] = (float(stats["median"]), int(stats.get("rounds", 0)))
    rows = []
    for group, impls in sorted(by_group.items()):
        op, params, tags = parse_group(group)
        ours = impls.get("ours", (math.nan, 0))[0]
        for impl, (median, rounds) in sorted(impls.items()):
            rows.append(Row(group, op, params, tags, impl, median, rounds, median / ours if ours > 0 else math.nan))
    return rows, machine


def slim_json(path: Path) -> None:
    """Drop pytest-benchmark's per-round ``stats.data`` (most of the file) so results can be committed."""
    data = json.loads(Path(path).read_text())
    for bench in data.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)
    tmp = Path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def write_csv(rows: list[Row], path: Path) -> None:
    keys = sorted({k for r in rows for k in r.params})
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["group", "op", *keys, "tags", "impl", "median_s", "rounds", "speedup_of_ours"])
        for r in rows:
            w.writerow([r.group, r.op, *[r.params.get(k, "") for k in keys], "+".join(r.tags), r.impl,
                        f"{r.median_s:.6g}", r.rounds, f"{r.speedup:.3g}"])


def markdown_table(rows: list[Row], machine: dict) -> str:
    cpu = (machine.get("cpu") or {}).get("brand_raw", "")
    lines = [f"Machine: {machine.get('node', '')} {cpu}".rstrip(),
             f"Measured {machine.get('datetime', '')} at commit {machine.get('commit', '')[:12]}; "
             "ratios compare implementations within this one run.", "",
             "| workload | impl | median | ours is faster by |", "|---|---|---|---|"]
    for r in rows:
        speed = "" if r.impl == "ours" or math.isnan(r.speedup) else f"{r.speedup:.2f}x"
        lines.append(f"| `{r.group}` | {r.impl} | {_fmt_time(r.median_s)} | {speed} |")
    return "\n".join(lines) + "\n"


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def plot(rows: list[Row], out: Path) -> list[Path]:
    """Time-vs-size per op and a speed-up chart; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.DataFrame([
        {"op": r.op, "D": r.params.get("D", ""), "size": r.params.get("N", r.params.get("K")),
         "tags": "+".join(r.tags) or "-", "impl": r.impl, "median_s": r.median_s, "speedup": r.speedup,
         "group": r.group}
        for r in rows
    ])
    written = []
    for op, sub in df.groupby("op"):
        sub = sub[sub["size"].notna()]
        if sub.empty or sub["size"].nunique() < 2:
            continue
        sub = sub.assign(panel=sub["D"].astype(str).radd("D=") + " " + sub["tags"])
        g = sns.relplot(data=sub, x="size", y="median_s", hue="impl", col="panel", kind="line", marker="o",
                        col_wrap=min(3, sub["panel"].nunique()), height=3.2, facet_kws={"sharey": False})
        g.set(xscale="log", yscale="log", xlabel="N (boxes) / K (rois)", ylabel="median time [s]")
        g.figure.suptitle(f"{op}: time vs size", y=1.02)
        path = out / f"time_vs_size_{op}.png"
        g.figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(g.figure)
        written.append(path)
    peers = df[(df["impl"] != "ours") & df["speedup"].notna()]
    if not peers.empty:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(peers) + 1.5))
        sns.barplot(data=peers, y="group", x="speedup", hue="impl", ax=ax, orient="h")
        ax.axvline(1.0, color="k", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("speed-up of ours (time of peer / time of ours)")
        ax.set_ylabel("")
        path = out / "speedup.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", nargs="+", type=Path, required=True, help="pytest-benchmark JSON file(s)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV and the plots")
    parser.add_argument("--markdown", type=Path, help="also write a Markdown table here")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--slim", action="store_true",
                        help="rewrite the JSON file(s) without the per-round raw timings (keeps stats, atomically)")
    args = parser.parse_args(argv)
    for path in args.json:
        if not path.is_file():
            parser.error(f"--json: no such file: {path}")
    if args.slim:
        for path in args.json:
            slim_json(path)
    rows, machine = load_rows(args.json)
    if not rows:
        parser.error("--json: the file(s) hold no benchmarks")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "kernels.csv")
    table = markdown_table(rows, machine)
    if args.markdown:
        args.markdown.write_text(table)
    print(table)
    if not args.no_plots:
        for path in plot(rows, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
