// box_iou on CUDA: one thread per (i, j) pair, IoU in float32 (float64 for float64 input).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "box_geometry.h"

namespace retina_unet {
namespace {

template <int D, typename scalar_t>
__global__ void box_iou_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n,
                               int64_t m, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = n * m;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)blockDim.x * gridDim.x) {
    const int64_t i = idx / m, j = idx % m;
    out[idx] = static_cast<scalar_t>(box_iou_pair<D, acc_t>(a + i * 2 * D, b + j * 2 * D));
  }
}

at::Tensor box_iou_cuda(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  TORCH_CHECK(boxes1.dim() == 2 && (boxes1.size(1) == 4 || boxes1.size(1) == 6),
              "box_iou: boxes1 must have shape (N, 4) or (N, 6), got ", boxes1.sizes());
  TORCH_CHECK(boxes2.dim() == 2 && boxes2.size(1) == boxes1.size(1),
              "box_iou: boxes2 must have shape (M, ", boxes1.size(1), ") like boxes1, got ", boxes2.sizes());
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "box_iou: boxes1 and boxes2 must share a dtype");
  TORCH_CHECK(boxes2.device() == boxes1.device(), "box_iou: boxes1 and boxes2 must be on the same device");
  c10::cuda::CUDAGuard guard(boxes1.device());
  auto a = boxes1.contiguous();
  auto b = boxes2.contiguous();
  auto out = at::empty({a.size(0), b.size(0)}, a.options());
  if (out.numel() == 0) return out;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((out.numel() + threads - 1) / threads, 65535);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "box_iou_cuda", [&] {
    if (a.size(1) == 4)
      box_iou_kernel<2, scalar_t><<<blocks, threads, 0, stream>>>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                                                                   a.size(0), b.size(0), out.data_ptr<scalar_t>());
    else
      box_iou_kernel<3, scalar_t><<<blocks, threads, 0, stream>>>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                                                                   a.size(0), b.size(0), out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_unet, CUDA, m) { m.impl("box_iou", &box_iou_cuda); }

}  // namespace retina_unet
