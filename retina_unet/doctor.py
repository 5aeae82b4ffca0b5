"""``retina-unet doctor``: what is installed, what was built, and which backend each op would use.

Exit code 0 when everything asked for is there; 1 when ``--require-cuda`` (or
``--require-kernels``) asks for something missing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

from retina_unet._extension import build_info
from retina_unet.ops._backend import backend_for

OPS = ("box_iou", "nms", "batched_nms", "nms_padded", "batched_nms_padded", "roi_align")


def arch_runs_on(built: str, gpu: str) -> bool:
    """Whether code built for ``built`` (a TORCH_CUDA_ARCH_LIST entry) runs on a GPU of capability ``gpu``.

    ``"9.0a"`` (arch-specific features) and ``"9.0f"`` are still SASS for 9.0, and ``"X+PTX"`` carries
    PTX that the driver compiles for any newer GPU.
    """
    ptx = built.endswith("+PTX")
    base = built.removesuffix("+PTX").rstrip("af")
    try:
        b = tuple(int(x) for x in base.split("."))
        g = tuple(int(x) for x in gpu.split("."))
    except ValueError:
        return False
    return b == g or (ptx and b <= g)


def collect() -> dict:
    """Everything the report shows, as plain data (one dict)."""
    info = build_info()
    devices = ["cpu"]
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            gpus.append({"index": i, "name": torch.cuda.get_device_name(i), "arch": f"{major}.{minor}"})
            devices.append(f"cuda:{i}")
    # Every op shares one library and one dispatch rule, so the backend is per device, not per op.
    backends = {dev: backend_for(dev) for dev in devices}
    if not gpus:  # what a CUDA tensor would get, were there a device
        backends["cuda (no device here)"] = backend_for("cuda")
    arch_ok = {g["name"] + f" (cuda:{g['index']})": any(arch_runs_on(a, g["arch"]) for a in info.cuda_archs)
              for g in gpus}
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "extension": {"built": info.available, "with_cuda": info.with_cuda, "cuda_archs": list(info.cuda_archs),
                      "error": info.error},
        "gpu_arch_built": arch_ok,
        "backends": {op: backends for op in OPS},
    }


def render(report: dict) -> str:
    ext = report["extension"]
    lines = [
        f"python        {report['python']} ({report['platform']})",
        f"torch         {report['torch']} (CUDA build: {report['torch_cuda'] or 'no'})",
        f"CUDA device   {'yes' if report['cuda_available'] else 'none'}",
    ]
    for g in report["gpus"]:
        lines.append(f"  cuda:{g['index']}      {g['name']} (compute capability {g['arch']})")
    if ext["built"]:
        archs = ", ".join(ext["cuda_archs"]) or "-"
        lines.append(f"retina_unet._C built, CUDA kernels: {'yes' if ext['with_cuda'] else 'no'} (archs {archs})")
    else:
        lines.append(f"retina_unet._C NOT built ({ext['error']})")
    for gpu, ok in report["gpu_arch_built"].items():
        if not ok:
            lines.append(f"  warning: no kernels compiled for {gpu}'s architecture; PTX JIT or a rebuild is needed")
    lines.append("backend per op and device:")
    for op, per_dev in report["backends"].items():
        lines.append(f"  {op:<20} " + "  ".join(f"{d}: {b}" for d, b in per_dev.items()))
    return "\n".join(lines)


def cuda_missing(report: dict) -> list[str]:
    """What keeps CUDA kernels from running here, each named exactly (the device, the kernels, or both)."""
    out = []
    if not report["cuda_available"]:
        out.append("a CUDA device (none visible to torch)")
    ext = report["extension"]
    if not ext["built"]:
        out.append("the compiled extension retina_unet._C (not built)")
    elif not ext["with_cuda"]:
        out.append("CUDA kernels in retina_unet._C (it was built with the C++ CPU kernels only)")
    return out


def add_doctor_subcommand(sub) -> None:
    p = sub.add_parser("doctor", help="report versions, the compiled extension and the backend each op uses")
    p.add_argument("--require-cuda", action="store_true", help="exit 1 unless CUDA kernels can run here")
    p.add_argument("--require-kernels", action="store_true", help="exit 1 unless the compiled extension is built")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else render(report))
    missing = []
    if args.require_kernels and not report["extension"]["built"]:
        missing.append("the compiled extension retina_unet._C")
    if args.require_cuda:
        missing += cuda_missing(report)
    for m in missing:
        print(f"doctor: missing: {m}", file=sys.stderr)
    return 1 if missing else 0
