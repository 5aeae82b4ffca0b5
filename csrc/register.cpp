// The op library `retina_unet`: build information and the `box_iou` schema.
//
// Each op family declares its schemas in its own csrc/<op>.cpp with TORCH_LIBRARY_FRAGMENT and
// implements them per backend in csrc/cpu/ and csrc/cuda/ (TORCH_LIBRARY_IMPL). Adding a backend
// never touches another backend's file, and no kernel branches on the device.
#include <Python.h>
#include <torch/library.h>

#include <atomic>
#include <string>

#include "kernel_version.h"

#ifndef RUNET_CUDA_ARCHS
#define RUNET_CUDA_ARCHS ""
#endif

namespace retina_unet {

// "cuda_archs" is empty for a CPU-only build. Exposed as an op so that it works without pybind.
std::string build_info() {
#ifdef WITH_CUDA
  return std::string("with_cuda=1;cuda_archs=") + RUNET_CUDA_ARCHS;
#else
  return "with_cuda=0;cuda_archs=";
#endif
}

namespace {
std::atomic<int64_t> g_kernel_version{1};

void set_kernel_version(int64_t v) {
  TORCH_CHECK(v == 1 || v == 2, "set_kernel_version: version must be 1 or 2, got ", v);
  g_kernel_version.store(v, std::memory_order_relaxed);
}
}  // namespace

int64_t kernel_version() { return g_kernel_version.load(std::memory_order_relaxed); }

TORCH_LIBRARY(retina_unet, m) {
  m.def("_build_info() -> str", &build_info);
  // Kernel generation switch (see kernel_version.h); process-wide.
  m.def("_set_kernel_version(int version) -> ()", &set_kernel_version);
  m.def("_kernel_version() -> int", &kernel_version);
  // boxes1 (N, 2D), boxes2 (M, 2D) -> (N, M) IoU, same dtype as the inputs.
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}

}  // namespace retina_unet

// Importing `retina_unet._C` only has to load this library so the registrations above run.
static struct PyModuleDef runet_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&runet_module); }
