"""Toy-data speed: paper-size 2D set, default-size 3D set, and the per-pixel loop baseline.

Run:  .venv/bin/python benchmarks/bench_toy_data.py [--task donuts_shape] [--workers N] [--loop-images 50]

Prints, in one run:
  1. seconds to generate and write (incl. SHA-256 and the manifest) the paper-size 2D set of one
     task: train pool 1000 + val 500 + test 1000 images of 320 x 320;
  2. the same for the 3D set at the default size (64^3);
  3. seconds to load it back with checksum verification;
  4. the per-image speed ratio of the vectorised generator against a per-pixel Python loop with
     the same sample semantics (MDT's approach), on ``--loop-images`` 2D images, after asserting
     that both produce identical images, masks, labels and boxes.
Targets (2-core machine): (1) <= 10 s; (4) >= 100x.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import toy_data  # noqa: E402
from toy_data.generate import resolve_workers  # noqa: E402
from toy_data.reference import generate_sample_loop  # noqa: E402


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (independent of other users' load)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_write(spec, root: Path, workers: int | None, label: str) -> None:
    out = root / label
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    toy_data.write_dataset(
        spec, out, seed=0, n_train=1000, n_val=500, n_test=1000, workers=workers, progress=False
    )
    t_write, cpu_write = time.perf_counter() - t0, _cpu_seconds() - cpu0
    size = _dir_bytes(out)
    t0 = time.perf_counter()
    ds = toy_data.load_dataset(out, verify=True)
    t_load = time.perf_counter() - t0
    n = sum(len(ds.split(s)) for s in toy_data.SPLITS)
    print(
        f"{label}: {spec.task} {'x'.join(map(str, spec.shape))}, {n} images (1000 + 500 + 1000), "
        f"{size / 1e9:.2f} GB: generate + write + SHA-256 {t_write:.2f} s "
        f"({t_write / n * 1e3:.2f} ms/image, {cpu_write:.2f} CPU-s in all threads); load + verify {t_load:.2f} s"
    )
    shutil.rmtree(out)


def bench_loop(spec, n: int) -> None:
    t0 = time.perf_counter()
    fast = [toy_data.generate_sample(spec, 0, i) for i in range(n)]
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [generate_sample_loop(spec, 0, i) for i in range(n)]
    t_slow = time.perf_counter() - t0
    for a, b in zip(fast, slow, strict=True):
        for key in ("image", "mask", "labels", "boxes"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), f"pixel loop differs in {key}"
    print(
        f"pixel loop vs vectorised, {n} images {spec.task} 320x320 (identical outputs asserted): "
        f"loop {t_slow / n * 1e3:.1f} ms/image, vectorised {t_fast / n * 1e3:.3f} ms/image, "
        f"speed-up {t_slow / t_fast:.0f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="donuts_shape", choices=toy_data.TASKS)
    p.add_argument("--workers", type=int, default=None, help="default: up to 4 CPUs")
    p.add_argument("--loop-images", type=int, default=50)
    p.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--skip-3d", action="store_true")
    args = p.parse_args()
    print(
        f"toy_data {toy_data.GENERATOR_VERSION}, numpy {np.__version__}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, workers={resolve_workers(args.workers)}, "
        f"load average at start {os.getloadavg()[0]:.2f} (other users' processes share the CPUs)"
    )
    root = Path(tempfile.mkdtemp(prefix="bench_toy_data-", dir=args.dir))
    try:
        bench_write(toy_data.task_spec(args.task, 2), root, args.workers, "2D paper set")
        if not args.skip_3d:
            bench_write(toy_data.task_spec(args.task, 3), root, args.workers, "3D default set")
        bench_loop(toy_data.task_spec(args.task, 2), args.loop_images)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
