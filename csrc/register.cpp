// The op library `retina_unet`: build information and the `box_iou` schema.
//
// Each op family declares its schemas in its own csrc/<op>.cpp with TORCH_LIBRARY_FRAGMENT and
// implements them per backend in csrc/cpu/ and csrc/cuda/ (TORCH_LIBRARY_IMPL). Adding a backend
// never touches another backend's file, and no kernel branches on the device.
#include <Python.h>
#include <torch/library.h>

#include <string>

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

TORCH_LIBRARY(retina_unet, m) {
  m.def("_build_info() -> str", &build_info);
  // boxes1 (N, 2D), boxes2 (M, 2D) -> (N, M) IoU, same dtype as the inputs.
  m.def("box_iou(Tensor boxes1, Tensor boxes2) -> Tensor");
}

}  // namespace retina_unet

// Importing `retina_unet._C` only has to load this library so the registrations above run.
static struct PyModuleDef runet_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&runet_module); }
