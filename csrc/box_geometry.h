// Box geometry shared by the CPU and CUDA kernels of every op.
//
// Convention (docs/conventions.md, "Boxes"): a box is 2*D numbers
// (lo_0, ..., lo_{D-1}, hi_0, ..., hi_{D-1}) in array-axis order, continuous coordinates, no "+1".
// Zero-volume or inverted boxes have volume 0 and IoU 0 with everything.
//
// Products go through mul_rn() so that nvcc cannot contract them with a following add into an
// FMA: CPU and CUDA then round identically, which keeps NMS decisions at the threshold (and on
// score ties) the same on every device.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RUNET_HD __host__ __device__ __forceinline__
#else
#define RUNET_HD inline
#endif

namespace retina_unet {

RUNET_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

RUNET_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

// Volume (area in 2D) of one box; 0 when any extent is <= 0 (or NaN).
template <int D, typename acc_t, typename scalar_t>
RUNET_HD acc_t box_volume(const scalar_t* b) {
  acc_t v = acc_t(1);
#pragma unroll
  for (int k = 0; k < D; ++k) {
    const acc_t e = acc_t(b[k + D]) - acc_t(b[k]);
    if (!(e > acc_t(0))) return acc_t(0);
    v = mul_rn(v, e);
  }
  return v;
}

// IoU of two boxes given their precomputed volumes. Returns 0 for degenerate boxes.
template <int D, typename acc_t, typename scalar_t>
RUNET_HD acc_t box_iou_with_volumes(const scalar_t* a, const scalar_t* b, acc_t vol_a, acc_t vol_b) {
  if (!(vol_a > acc_t(0)) || !(vol_b > acc_t(0))) return acc_t(0);
  acc_t inter = acc_t(1);
#pragma unroll
  for (int k = 0; k < D; ++k) {
    const acc_t lo = acc_t(a[k]) > acc_t(b[k]) ? acc_t(a[k]) : acc_t(b[k]);
    const acc_t hi = acc_t(a[k + D]) < acc_t(b[k + D]) ? acc_t(a[k + D]) : acc_t(b[k + D]);
    const acc_t e = hi - lo;
    if (!(e > acc_t(0))) return acc_t(0);
    inter = mul_rn(inter, e);
  }
  const acc_t uni = (vol_a + vol_b) - inter;
  return inter / uni;
}

template <int D, typename acc_t, typename scalar_t>
RUNET_HD acc_t box_iou_pair(const scalar_t* a, const scalar_t* b) {
  return box_iou_with_volumes<D, acc_t>(a, b, box_volume<D, acc_t>(a), box_volume<D, acc_t>(b));
}

}  // namespace retina_unet
