"""Build ``retina_unet._C``: the C++ kernels always, the CUDA kernels when possible.

CUDA is built when torch is a CUDA build and ``nvcc`` is found, or when ``FORCE_CUDA=1`` (then a
missing toolkit is a hard error, never a silent CPU-only build). ``FORCE_CUDA=0`` builds CPU only.
``DEBUG=1`` compiles with ``-O0 -g``. The build configuration is printed, and recorded in the
extension (``retina_unet.build_info()``).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# nvcc on PATH may be a wrapper script (/usr/local/bin/nvcc); torch would then guess the wrong CUDA
# root and fail to find -lcudart. Point it at the real toolkit before cpp_extension is imported.
if not os.environ.get("CUDA_HOME") and os.path.isdir("/usr/local/cuda"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _log(msg: str) -> None:
    print(f"[retina_unet build] {msg}", file=sys.stderr, flush=True)


def _want_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA", "").strip()
    nvcc = shutil.which("nvcc") or (
        os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if os.environ.get("CUDA_HOME") else None
    )
    if force == "1":
        if torch.version.cuda is None:
            raise RuntimeError(
                "FORCE_CUDA=1 but the installed torch is a CPU-only build "
                f"(torch {torch.__version__}); install a CUDA build of torch."
            )
        if not nvcc or not os.path.exists(nvcc):
            raise RuntimeError("FORCE_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH).")
        return True
    if force == "0":
        return False
    return torch.version.cuda is not None and nvcc is not None


def _extension():
    with_cuda = _want_cuda()
    debug = os.environ.get("DEBUG", "0") == "1"
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    opt = ["-O0", "-g"] if debug else ["-O3"]
    cxx_flags = [*opt, "-fopenmp", "-ffp-contract=off"]
    define_macros = []
    include_dirs = [os.path.join(ROOT, "csrc")]
    extra = {"cxx": cxx_flags}
    if with_cuda:
        # Without a visible GPU torch's builder cannot pick architectures (IndexError): default
        # to Ampere and Hopper (the H100/H200 are 9.0).
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        define_macros.append(("WITH_CUDA", None))
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
        define_macros.append(("RUNET_CUDA_ARCHS", '"' + archs.replace(';', ',').replace(' ', ',') + '"'))
        # ATen/cuda headers need cuSPARSE/cuBLAS headers, which torch's pip deps ship.
        for cand in glob.glob(os.path.join(os.path.dirname(torch.__file__), "..", "nvidia", "cu*", "include")):
            include_dirs.append(os.path.abspath(cand))
        extra["nvcc"] = [*opt, "--expt-relaxed-constexpr", "-lineinfo"]
        ext_cls = CUDAExtension
    else:
        ext_cls = CppExtension
    _log(
        f"torch {torch.__version__} (cuda {torch.version.cuda}); building "
        f"{'C++ + CUDA (archs ' + os.environ.get('TORCH_CUDA_ARCH_LIST', '') + ')' if with_cuda else 'C++ only'}"
        f"; {len(sources)} sources; {'debug' if debug else 'release'}"
    )
    return ext_cls(
        name="retina_unet._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )


# RETINA_UNET_SKIP_EXT=1: register the packages (editable install, console scripts) without compiling;
# `make build` compiles once with `build_ext --inplace` and then installs this way (not a second build).
_SKIP_EXT = os.environ.get("RETINA_UNET_SKIP_EXT", "").strip() == "1"
if _SKIP_EXT:
    _log("RETINA_UNET_SKIP_EXT=1: not compiling retina_unet._C (use the in-place build)")

setup(
    packages=find_packages(include=["retina_unet*", "toy_data*", "benchmarks*", "reports*"]),
    ext_modules=[] if _SKIP_EXT else [_extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
