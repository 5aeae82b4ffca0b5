// RoIAlign schemas (2D and 3D share them; D = input.dim() - 2). Kernels: csrc/cpu/roi_align_cpu.cpp,
// csrc/cuda/roi_align_cuda.cu; autograd, fake kernels and the wrapper: retina_unet/ops/roi_align.py.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(retina_unet, m) {
  // input (N, C, *spatial[D]), rois (K, 1 + 2D) = (batch, lo..., hi...) -> (K, C, *output_size).
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int[] output_size, int sampling_ratio, "
      "bool aligned) -> Tensor");
  // grad (K, C, *output_size) -> grad_input (input_shape). Deterministic when
  // torch.use_deterministic_algorithms(True) is on (CUDA: gather kernel instead of atomics).
  m.def(
      "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int[] output_size, "
      "int sampling_ratio, bool aligned, SymInt[] input_shape) -> Tensor");
}
