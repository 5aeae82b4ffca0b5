// box_iou on the CPU: rows in parallel, IoU in float32 (float64 for float64 input).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "box_geometry.h"

namespace retina_unet {
namespace {

template <int D, typename scalar_t>
void box_iou_impl(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = a.size(0), m = b.size(0);
  const scalar_t* pa = a.data_ptr<scalar_t>();
  const scalar_t* pb = b.data_ptr<scalar_t>();
  scalar_t* po = out.data_ptr<scalar_t>();
  std::vector<acc_t> vol_b(m);
  for (int64_t j = 0; j < m; ++j) vol_b[j] = box_volume<D, acc_t>(pb + j * 2 * D);
  at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* bi = pa + i * 2 * D;
      const acc_t vi = box_volume<D, acc_t>(bi);
      for (int64_t j = 0; j < m; ++j)
        po[i * m + j] = static_cast<scalar_t>(box_iou_with_volumes<D, acc_t>(bi, pb + j * 2 * D, vi, vol_b[j]));
    }
  });
}

at::Tensor box_iou_cpu(const at::Tensor& boxes1, const at::Tensor& boxes2) {
  TORCH_CHECK(boxes1.dim() == 2 && (boxes1.size(1) == 4 || boxes1.size(1) == 6),
              "box_iou: boxes1 must have shape (N, 4) or (N, 6), got ", boxes1.sizes());
  TORCH_CHECK(boxes2.dim() == 2 && boxes2.size(1) == boxes1.size(1),
              "box_iou: boxes2 must have shape (M, ", boxes1.size(1), ") like boxes1, got ", boxes2.sizes());
  TORCH_CHECK(boxes1.scalar_type() == boxes2.scalar_type(), "box_iou: boxes1 and boxes2 must share a dtype, got ",
              boxes1.scalar_type(), " and ", boxes2.scalar_type());
  auto a = boxes1.contiguous();
  auto b = boxes2.contiguous();
  auto out = at::empty({a.size(0), b.size(0)}, a.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "box_iou_cpu", [&] {
    if (a.size(1) == 4)
      box_iou_impl<2, scalar_t>(a, b, out);
    else
      box_iou_impl<3, scalar_t>(a, b, out);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_unet, CPU, m) { m.impl("box_iou", &box_iou_cpu); }

}  // namespace retina_unet
