"""The profiling entry point and the kernel-benchmark report command."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import profile_op
from reports import kernels


def test_profile_op_writes_trace_and_table(tmp_path):
    assert profile_op.main(["--op", "nms", "--dim", "3", "--size", "200", "--device", "cpu", "--iters", "1",
                            "--out", str(tmp_path)]) == 0
    trace = tmp_path / "nms_D3_200_sparse_cpu.trace.json"
    table = tmp_path / "nms_D3_200_sparse_cpu.table.txt"
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("retina_unet::nms" in e.get("name", "") for e in events)
    assert "retina_unet::nms" in table.read_text()


def test_profile_op_rejects_cuda_without_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        profile_op.main(["--op", "nms", "--device", "cuda", "--out", str(tmp_path)])


def _bench(group, impl, median):
    return {"group": group, "name": f"test_{impl}", "extra_info": {"impl": impl},
            "stats": {"median": median, "rounds": 3}}


def test_kernel_report_ratios_csv_and_plots(tmp_path):
    data = {"machine_info": {"node": "here", "cpu": {"brand_raw": "cpu"}}, "benchmarks": [
        _bench("nms|D=3|N=1000|sparse", "ours", 0.001), _bench("nms|D=3|N=1000|sparse", "monai", 0.5),
        _bench("nms|D=3|N=5000|sparse", "ours", 0.004), _bench("nms|D=3|N=5000|sparse", "monai", 8.0),
        _bench("roi_align_fwdbwd|D=3|K=256", "grid_sample", 0.3),
    ]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    rows, _ = kernels.load_rows([path])
    by = {(r.group, r.impl): r for r in rows}
    assert by[("nms|D=3|N=5000|sparse", "monai")].speedup == pytest.approx(2000.0)
    assert by[("nms|D=3|N=5000|sparse", "ours")].speedup == pytest.approx(1.0)
    assert math.isnan(by[("roi_align_fwdbwd|D=3|K=256", "grid_sample")].speedup)  # no "ours" in that group
    assert kernels.parse_group("nms|D=3|N=5000|sparse") == ("nms", {"D": 3, "N": 5000}, ("sparse",))
    out = tmp_path / "out"
    assert kernels.main(["--json", str(path), "--out", str(out), "--markdown", str(out / "t.md")]) == 0
    assert (out / "kernels.csv").read_text().count("\n") == 6
    assert (out / "time_vs_size_nms.png").stat().st_size > 0 and (out / "speedup.png").stat().st_size > 0
    assert "2000.00x" in (out / "t.md").read_text()


def test_kernel_report_rejects_missing_file(tmp_path):
    with pytest.raises(SystemExit):
        kernels.main(["--json", str(tmp_path / "nope.json"), "--out", str(tmp_path)])


def test_profile_op_accepts_the_benchmark_shapes(tmp_path):
    # RoIAlign with the kernel benchmark's 2D workload (K=512, C=64, 7x7), batched NMS with 80 groups.
    assert profile_op.main(["--op", "roi_align_backward", "--dim", "2", "--bench-shape", "--device", "cpu",
                            "--iters", "1", "--kernels", "v1", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "roi_align_backward_D2_bench_sparse_cpu_v1.table.txt").read_text()
    assert "retina_unet::_roi_align_backward" in table
    assert profile_op.main(["--op", "batched_nms", "--dim", "2", "--size", "800", "--groups", "80",
                            "--device", "cpu", "--iters", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "batched_nms_D2_800_sparse_cpu.table.txt").exists()
