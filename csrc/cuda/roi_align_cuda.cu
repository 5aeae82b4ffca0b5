// RoIAlign on CUDA, 2D and 3D (sampling geometry shared with the CPU: csrc/roi_align_common.h).
//
// Forward: one thread per output element (roi, channel, bin), 64-bit indices; it visits only the
//   samples that can land inside the input (so giant rois cost O(input size)), sums the 2^D corner
//   terms of each sample in torchvision's order, without FMA contraction, and divides by count.
// Backward, default: one thread per (roi, channel, bin) walks the same samples and scatters
//   w * grad / count with atomicAdd into a float32 (float64 for double) buffer. Consecutive samples
//   of a bin hit the same voxels, so each thread merges its updates in a small register cache
//   (8 distinct addresses) before issuing atomics, and skips zero weights.
// Backward, deterministic (torch.use_deterministic_algorithms(True)): gather. A small kernel
//   computes each roi's geometry and the input index range it can touch; then one thread per input
//   element (image, channel, voxel) visits the rois in index order, and for those touching it sums
//   over the bins near the voxel the separable weight prod_k W_k[p_k, j_k] times grad. No atomics,
//   a fixed summation order: bitwise reproducible. Cost grows with K * input size (roi scan is a
//   broadcast read of a few bytes per roi), so it is the slower path, used only when asked for.
// Invalid batch indices give zeros here (no device sync); the Python wrapper reports them on the
// CPU, and on CUDA only under its debug switch (a value check would synchronise).
//
// Kernel generations (kernel_version.h). v1: the kernels above, one thread per output element, each
// recomputing its roi's geometry. v2 (opt-in until it has passed the CUDA tests and
// compute-sanitizer on a GPU): one block per (roi, chunk of (channel, bin) outputs in output order);
// the roi's geometry and, per axis and bin, the table of its valid samples (index pair, weights,
// int32 indices) are computed once per block into shared memory, with exactly the v1 functions, so
// the forward is bitwise equal to v1; the inner loop then only reads the tables and the input
// (float32 for float/half/bfloat16). The v2 atomic backward uses the same tables and issues one
// atomicAdd per non-zero corner weight (no per-thread merge cache on the stack). Rois whose tables
// do not fit (more than kTabCap samples per axis, or more than kMaxPooledV2 bins per axis) fall back
// to the v1 per-thread computation inside the v2 kernel.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <vector>

#include "kernel_version.h"
#include "roi_align_common.h"

namespace retina_unet {
namespace {

namespace rad = roi_align_detail;
using rad::Axis;
using rad::Interp;

struct KGeom {
  int64_t N, C, K;
  int64_t size[3], pooled[3], stride[3];
  int64_t vol, pvol;
  double spatial_scale;
  int64_t sampling_ratio;
  bool aligned;
};

// Geometry of one roi; batch < 0 when it contributes nothing (bad batch index, non-finite roi).
template <int D, typename acc_t, typename scalar_t>
__device__ __forceinline__ int64_t roi_axes(const KGeom& g, const scalar_t* roi, Axis<acc_t>* ax, acc_t& count) {
  const acc_t b = static_cast<acc_t>(roi[0]);
  if (!(b >= acc_t(0) && b < static_cast<acc_t>(g.N))) return -1;
  count = acc_t(1);
#pragma unroll
  for (int k = 0; k < D; ++k) {
    if (!rad::make_axis<acc_t>(ax[k], roi[1 + k], roi[1 + D + k], g.spatial_scale, g.aligned, g.pooled[k],
                               g.sampling_ratio, g.size[k]))
      return -1;
    count = mul_rn(count, static_cast<acc_t>(ax[k].grid));
  }
  count = count > acc_t(1) ? count : acc_t(1);
  return static_cast<int64_t>(b);
}

// Sum over the 2^D corners of one sample (corner bits in axis order, as torchvision does in 2D).
template <int D, typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t corner_sum(const Interp<acc_t>* s, const scalar_t* x, const int64_t* stride) {
  acc_t v = acc_t(0);
#pragma unroll
  for (int c = 0; c < (1 << D); ++c) {
    acc_t w = acc_t(1);
    int64_t off = 0;
#pragma unroll
    for (int k = 0; k < D; ++k) {
      const bool hi = (c >> (D - 1 - k)) & 1;
      const acc_t wk = hi ? s[k].wh : s[k].wl;
      w = k == 0 ? wk : mul_rn(w, wk);
      off += (hi ? s[k].hi : s[k].lo) * stride[k];
    }
    const acc_t term = mul_rn(w, static_cast<acc_t>(x[off]));
    v = c == 0 ? term : v + term;
  }
  return v;
}

// Forward: nested loops over the valid samples of bin p, axis K first.
template <int D, int K, typename acc_t, typename scalar_t>
struct FwdSamples {
  static __device__ __forceinline__ void run(const Axis<acc_t>* ax, const int64_t* p, const int64_t* wb,
                                             const int64_t* we, Interp<acc_t>* s, const scalar_t* x,
                                             const int64_t* stride, acc_t& acc) {
    for (int64_t i = wb[K]; i < we[K]; ++i) {
      if (!rad::interp(rad::sample_coord(ax[K], p[K], i), ax[K].size, s[K])) continue;
      FwdSamples<D, K + 1, acc_t, scalar_t>::run(ax, p, wb, we, s, x, stride, acc);
    }
  }
};
template <int D, typename acc_t, typename scalar_t>
struct FwdSamples<D, D, acc_t, scalar_t> {
  static __device__ __forceinline__ void run(const Axis<acc_t>*, const int64_t*, const int64_t*, const int64_t*,
                                             Interp<acc_t>* s, const scalar_t* x, const int64_t* stride, acc_t& acc) {
    acc = acc + corner_sum<D, acc_t, scalar_t>(s, x, stride);
  }
};

// Decomposes a flat (roi, channel, bin) index.
template <int D>
__device__ __forceinline__ void split_index(const KGeom& g, int64_t idx, int64_t& r, int64_t& c, int64_t* p) {
  int64_t q = idx % g.pvol;
  const int64_t t = idx / g.pvol;
  c = t % g.C;
  r = t / g.C;
#pragma unroll
  for (int k = D - 1; k >= 0; --k) {
    p[k] = q % g.pooled[k];
    q /= g.pooled[k];
  }
}

template <int D, typename scalar_t>
__global__ void roi_align_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ rois, KGeom g,
                                         int64_t total, scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t r, c, p[D];
    split_index<D>(g, idx, r, c, p);
    Axis<acc_t> ax[D];
    acc_t count;
    const int64_t n = roi_axes<D, acc_t>(g, rois + r * (1 + 2 * D), ax, count);
    acc_t val = acc_t(0);
    if (n >= 0) {
      Interp<acc_t> s[D];
      int64_t wb[D], we[D];  // sample windows, once per axis
#pragma unroll
      for (int k = 0; k < D; ++k) rad::valid_window(ax[k], p[k], wb[k], we[k]);
      FwdSamples<D, 0, acc_t, scalar_t>::run(ax, p, wb, we, s, x + (n * g.C + c) * g.vol, g.stride, val);
      val = val / count;
    }
    out[idx] = static_cast<scalar_t>(val);
  }
}

// A few pending (address, value) updates held in registers; flushed with atomicAdd.
template <typename acc_t, int S = 8>
struct PendingAdds {
  int64_t off[S];
  acc_t val[S];
  int n = 0;
  __device__ __forceinline__ void flush(acc_t* gx) {
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (i < n) atomicAdd(gx + off[i], val[i]);
    n = 0;
  }
  __device__ __forceinline__ void add(acc_t* gx, int64_t o, acc_t v) {
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (i < n && off[i] == o) {
        val[i] += v;
        return;
      }
    if (n == S) flush(gx);
#pragma unroll
    for (int i = 0; i < S; ++i)
      if (i == n) {
        off[i] = o;
        val[i] = v;
      }
    ++n;
  }
};

template <int D, int K, typename acc_t>
struct BwdSamples {
  static __device__ __forceinline__ void run(const Axis<acc_t>* ax, const int64_t* p, const int64_t* wb,
                                             const int64_t* we, Interp<acc_t>* s, acc_t* gx, const int64_t* stride,
                                             acc_t gval, PendingAdds<acc_t>& pend) {
    for (int64_t i = wb[K]; i < we[K]; ++i) {
      if (!rad::interp(rad::sample_coord(ax[K], p[K], i), ax[K].size, s[K])) continue;
      BwdSamples<D, K + 1, acc_t>::run(ax, p, wb, we, s, gx, stride, gval, pend);
    }
  }
};
template <int D, typename acc_t>
struct BwdSamples<D, D, acc_t> {
  static __device__ __forceinline__ void run(const Axis<acc_t>*, const int64_t*, const int64_t*, const int64_t*,
                                             Interp<acc_t>* s, acc_t* gx, const int64_t* stride, acc_t gval,
                                             PendingAdds<acc_t>& pend) {
#pragma unroll
    for (int c = 0; c < (1 << D); ++c) {
      acc_t w = acc_t(1);
      int64_t off = 0;
#pragma unroll
      for (int k = 0; k < D; ++k) {
        const bool hi = (c >> (D - 1 - k)) & 1;
        const acc_t wk = hi ? s[k].wh : s[k].wl;
        w = k == 0 ? wk : mul_rn(w, wk);
        off += (hi ? s[k].hi : s[k].lo) * stride[k];
      }
      if (w != acc_t(0)) pend.add(gx, off, mul_rn(w, gval));
    }
  }
};

template <int D, typename scalar_t>
__global__ void roi_align_backward_atomic_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ rois,
                                                 KGeom g, int64_t total, at::opmath_type<scalar_t>* __restrict__ gx) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t r, c, p[D];
    split_index<D>(g, idx, r, c, p);
    Axis<acc_t> ax[D];
    acc_t count;
    const int64_t n = roi_axes<D, acc_t>(g, rois + r * (1 + 2 * D), ax, count);
    if (n < 0) continue;
    const acc_t gval = static_cast<acc_t>(grad[idx]) / count;
    if (gval == acc_t(0)) continue;
    Interp<acc_t> s[D];
    PendingAdds<acc_t> pend;
    acc_t* base = gx + (n * g.C + c) * g.vol;
    int64_t wb[D], we[D];
#pragma unroll
    for (int k = 0; k < D; ++k) rad::valid_window(ax[k], p[k], wb[k], we[k]);
    BwdSamples<D, 0, acc_t>::run(ax, p, wb, we, s, base, g.stride, gval, pend);
    pend.flush(base);
  }
}

// Per-roi geometry for the gather kernel.
template <int D, typename acc_t>
struct RoiGeo {
  Axis<acc_t> ax[D];
  int64_t rlo[D], rhi[D];
  int64_t batch;  // < 0: touches nothing
  acc_t count;
};

template <int D, typename scalar_t>
__global__ void roi_geometry_kernel(const scalar_t* __restrict__ rois, KGeom g,
                                    RoiGeo<D, at::opmath_type<scalar_t>>* __restrict__ geo) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < g.K;
       r += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    RoiGeo<D, acc_t> G;
    G.batch = roi_axes<D, acc_t>(g, rois + r * (1 + 2 * D), G.ax, G.count);
#pragma unroll
    for (int k = 0; k < D; ++k) {
      G.rlo[k] = 0;
      G.rhi[k] = -1;
      if (G.batch >= 0 && !rad::touched_range(G.ax[k], G.rlo[k], G.rhi[k])) G.batch = -1;
    }
    geo[r] = G;
  }
}

// Sum over the bins near voxel j of prod_k W_k[p_k, j_k] * grad[p], axis K first.
template <int D, int K, typename acc_t, typename scalar_t>
struct GatherBins {
  static __device__ __forceinline__ acc_t run(const Axis<acc_t>* ax, const int64_t* j, const scalar_t* grad,
                                              int64_t goff, acc_t w) {
    int64_t b, e;
    rad::bins_touching(ax[K], j[K], b, e);
    acc_t s = acc_t(0);
    for (int64_t p = b; p < e; ++p) {
      const acc_t m = rad::axis_weight(ax[K], p, j[K]);
      if (m == acc_t(0)) continue;
      s = s + GatherBins<D, K + 1, acc_t, scalar_t>::run(ax, j, grad, goff * ax[K].pooled + p, mul_rn(w, m));
    }
    return s;
  }
};
template <int D, typename acc_t, typename scalar_t>
struct GatherBins<D, D, acc_t, scalar_t> {
  static __device__ __forceinline__ acc_t run(const Axis<acc_t>*, const int64_t*, const scalar_t* grad, int64_t goff,
                                              acc_t w) {
    return mul_rn(w, static_cast<acc_t>(grad[goff]));
  }
};

template <int D, typename scalar_t>
__global__ void roi_align_backward_gather_kernel(const scalar_t* __restrict__ grad,
                                                 const RoiGeo<D, at::opmath_type<scalar_t>>* __restrict__ geo, KGeom g,
                                                 int64_t total, scalar_t* __restrict__ gx) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t v = idx % g.vol;
    const int64_t t = idx / g.vol;
    const int64_t c = t % g.C, n = t / g.C;
    int64_t j[D];
#pragma unroll
    for (int k = D - 1; k >= 0; --k) {
      j[k] = v % g.size[k];
      v /= g.size[k];
    }
    acc_t acc = acc_t(0);
    for (int64_t r = 0; r < g.K; ++r) {  // index order: deterministic
      const auto& G = geo[r];
      if (G.batch != n) continue;
      bool inside = true;
#pragma unroll
      for (int k = 0; k < D; ++k) inside = inside && j[k] >= G.rlo[k] && j[k] <= G.rhi[k];
      if (!inside) continue;
      const acc_t s =
          GatherBins<D, 0, acc_t, scalar_t>::run(G.ax, j, grad + (r * g.C + c) * g.pvol, 0, acc_t(1));
      acc = acc + s / G.count;
    }
    gx[idx] = static_cast<scalar_t>(acc);
  }
}


// ---- v2 kernels ------------------------------------------------------------------------------

constexpr int kTabCap = 512;        // valid samples per axis per roi (all bins) held in shared memory
constexpr int kMaxPooledV2 = 64;    // bins per axis with a table
constexpr int kV2Threads = 256;
constexpr int kV2Items = 4;         // outputs per thread per block

template <typename acc_t>
struct TabEntry {
  int32_t lo, hi;
  acc_t wl, wh;
};

// Per-block shared state of one roi: geometry and per-axis sample tables (slot p * grid_k + j).
template <int D, typename acc_t>
struct RoiShared {
  TabEntry<acc_t> tab[D][kTabCap];
  int32_t cnt[D][kMaxPooledV2];
  Axis<acc_t> ax[D];
  acc_t count;
  int64_t batch;  // < 0: the roi gives zeros
  int fits;       // tables built; else per-thread v1 computation
};

// Builds the shared state (all threads call it; ends with a barrier).
template <int D, typename scalar_t>
__device__ __forceinline__ void build_roi_shared(const KGeom& g, const scalar_t* roi,
                                                 RoiShared<D, at::opmath_type<scalar_t>>& sh) {
  using acc_t = at::opmath_type<scalar_t>;
  if (threadIdx.x == 0) {
    Axis<acc_t> ax[D];
    acc_t count = acc_t(1);
    sh.batch = roi_axes<D, acc_t>(g, roi, ax, count);
    int fits = 1;
#pragma unroll
    for (int k = 0; k < D; ++k) {
      sh.ax[k] = ax[k];
      fits = fits && ax[k].pooled <= kMaxPooledV2 && ax[k].grid * ax[k].pooled <= kTabCap;
    }
    sh.count = count;
    sh.fits = fits;
  }
  __syncthreads();
  if (sh.batch < 0 || !sh.fits) return;
  int64_t total_bins = 0;
#pragma unroll
  for (int k = 0; k < D; ++k) total_bins += sh.ax[k].pooled;
  for (int64_t q = threadIdx.x; q < total_bins; q += blockDim.x) {
    int k = 0;
    int64_t p = q;
    while (p >= sh.ax[k].pooled) p -= sh.ax[k].pooled, ++k;
    const Axis<acc_t>& a = sh.ax[k];
    int64_t wb, we;
    rad::valid_window(a, p, wb, we);
    int32_t c = 0;
    TabEntry<acc_t>* slot = &sh.tab[k][p * a.grid];
    for (int64_t i = wb; i < we; ++i) {
      Interp<acc_t> it;
      if (!rad::interp(rad::sample_coord(a, p, i), a.size, it)) continue;
      slot[c].lo = static_cast<int32_t>(it.lo);
      slot[c].hi = static_cast<int32_t>(it.hi);
      slot[c].wl = it.wl;
      slot[c].wh = it.wh;
      ++c;
    }
    sh.cnt[k][p] = c;
  }
  __syncthreads();
}

// Forward over the tables: same visiting order and arithmetic as FwdSamples (bitwise equal).
template <int D, int K, typename acc_t, typename scalar_t>
struct TabFwd {
  static __device__ __forceinline__ void run(const RoiShared<D, acc_t>& sh, const int64_t* p, Interp<acc_t>* s,
                                             const scalar_t* x, const int64_t* stride, acc_t& acc) {
    const TabEntry<acc_t>* e = &sh.tab[K][p[K] * sh.ax[K].grid];
    const int32_t n = sh.cnt[K][p[K]];
    for (int32_t j = 0; j < n; ++j) {
      s[K].lo = e[j].lo;
      s[K].hi = e[j].hi;
      s[K].wl = e[j].wl;
      s[K].wh = e[j].wh;
      TabFwd<D, K + 1, acc_t, scalar_t>::run(sh, p, s, x, stride, acc);
    }
  }
};
template <int D, typename acc_t, typename scalar_t>
struct TabFwd<D, D, acc_t, scalar_t> {
  static __device__ __forceinline__ void run(const RoiShared<D, acc_t>&, const int64_t*, Interp<acc_t>* s,
                                             const scalar_t* x, const int64_t* stride, acc_t& acc) {
    acc = acc + corner_sum<D, acc_t, scalar_t>(s, x, stride);
  }
};

template <int D>
__device__ __forceinline__ void split_bin(const KGeom& g, int64_t q, int64_t* p) {
#pragma unroll
  for (int k = D - 1; k >= 0; --k) {
    p[k] = q % g.pooled[k];
    q /= g.pooled[k];
  }
}

// Grid (K, chunks): block (r, y) computes outputs [y * T * I, (y + 1) * T * I) of roi r, in order.
template <int D, typename scalar_t>
__global__ void __launch_bounds__(kV2Threads) roi_align_forward_v2_kernel(const scalar_t* __restrict__ x,
                                                                          const scalar_t* __restrict__ rois, KGeom g,
                                                                          scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  // Raw storage: Axis has default member initialisers, which __shared__ variables may not have.
  __shared__ __align__(16) unsigned char sh_raw[sizeof(RoiShared<D, acc_t>)];
  auto& sh = *reinterpret_cast<RoiShared<D, acc_t>*>(sh_raw);
  const int64_t r = blockIdx.x;
  build_roi_shared<D, scalar_t>(g, rois + r * (1 + 2 * D), sh);
  const int64_t per_roi = g.C * g.pvol;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kV2Threads * kV2Items;
  const int64_t o1 = o0 + kV2Threads * kV2Items < per_roi ? o0 + kV2Threads * kV2Items : per_roi;
  scalar_t* out_r = out + r * per_roi;
  for (int64_t o = o0 + threadIdx.x; o < o1; o += kV2Threads) {
    acc_t val = acc_t(0);
    if (sh.batch >= 0) {
      const int64_t c = o / g.pvol;
      int64_t p[D];
      split_bin<D>(g, o - c * g.pvol, p);
      const scalar_t* xc = x + (sh.batch * g.C + c) * g.vol;
      Interp<acc_t> s[D];
      if (sh.fits) {
        TabFwd<D, 0, acc_t, scalar_t>::run(sh, p, s, xc, g.stride, val);
      } else {
        int64_t wb[D], we[D];
#pragma unroll
        for (int k = 0; k < D; ++k) rad::valid_window(sh.ax[k], p[k], wb[k], we[k]);
        FwdSamples<D, 0, acc_t, scalar_t>::run(sh.ax, p, wb, we, s, xc, g.stride, val);
      }
      val = val / sh.count;
    }
    out_r[o] = static_cast<scalar_t>(val);
  }
}

// Atomic backward over the tables: one atomicAdd per non-zero corner weight.
template <int D, int K, typename acc_t>
struct TabBwd {
  static __device__ __forceinline__ void run(const RoiShared<D, acc_t>& sh, const int64_t* p, Interp<acc_t>* s,
                                             acc_t* gx, const int64_t* stride, acc_t gval) {
    const TabEntry<acc_t>* e = &sh.tab[K][p[K] * sh.ax[K].grid];
    const int32_t n = sh.cnt[K][p[K]];
    for (int32_t j = 0; j < n; ++j) {
      s[K].lo = e[j].lo;
      s[K].hi = e[j].hi;
      s[K].wl = e[j].wl;
      s[K].wh = e[j].wh;
      TabBwd<D, K + 1, acc_t>::run(sh, p, s, gx, stride, gval);
    }
  }
};
template <int D, typename acc_t>
struct TabBwd<D, D, acc_t> {
  static __device__ __forceinline__ void run(const RoiShared<D, acc_t>&, const int64_t*, Interp<acc_t>* s, acc_t* gx,
                                             const int64_t* stride, acc_t gval) {
#pragma unroll
    for (int c = 0; c < (1 << D); ++c) {
      acc_t w = acc_t(1);
      int64_t off = 0;
#pragma unroll
      for (int k = 0; k < D; ++k) {
        const bool hi = (c >> (D - 1 - k)) & 1;
        const acc_t wk = hi ? s[k].wh : s[k].wl;
        w = k == 0 ? wk : mul_rn(w, wk);
        off += (hi ? s[k].hi : s[k].lo) * stride[k];
      }
      if (w != acc_t(0)) atomicAdd(gx + off, mul_rn(w, gval));
    }
  }
};

template <int D, typename scalar_t>
__global__ void __launch_bounds__(kV2Threads)
    roi_align_backward_atomic_v2_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ rois, KGeom g,
                                        at::opmath_type<scalar_t>* __restrict__ gx) {
  using acc_t = at::opmath_type<scalar_t>;
  // Raw storage: Axis has default member initialisers, which __shared__ variables may not have.
  __shared__ __align__(16) unsigned char sh_raw[sizeof(RoiShared<D, acc_t>)];
  auto& sh = *reinterpret_cast<RoiShared<D, acc_t>*>(sh_raw);
  const int64_t r = blockIdx.x;
  build_roi_shared<D, scalar_t>(g, rois + r * (1 + 2 * D), sh);
  if (sh.batch < 0) return;  // uniform
  const int64_t per_roi = g.C * g.pvol;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kV2Threads * kV2Items;
  const int64_t o1 = o0 + kV2Threads * kV2Items < per_roi ? o0 + kV2Threads * kV2Items : per_roi;
  const scalar_t* grad_r = grad + r * per_roi;
  for (int64_t o = o0 + threadIdx.x; o < o1; o += kV2Threads) {
    const acc_t gval = static_cast<acc_t>(grad_r[o]) / sh.count;
    if (gval == acc_t(0)) continue;
    const int64_t c = o / g.pvol;
    int64_t p[D];
    split_bin<D>(g, o - c * g.pvol, p);
    acc_t* base = gx + (sh.batch * g.C + c) * g.vol;
    Interp<acc_t> s[D];
    if (sh.fits) {
      TabBwd<D, 0, acc_t>::run(sh, p, s, base, g.stride, gval);
    } else {
      PendingAdds<acc_t> pend;
      int64_t wb[D], we[D];
#pragma unroll
      for (int k = 0; k < D; ++k) rad::valid_window(sh.ax[k], p[k], wb[k], we[k]);
      BwdSamples<D, 0, acc_t>::run(sh.ax, p, wb, we, s, base, g.stride, gval, pend);
      pend.flush(base);
    }
  }
}

// v2 launch shape, or false when v1 must run (per-roi chunks exceed the grid's y limit).
bool v2_grid(const KGeom& g, dim3& grid) {
  const int64_t per_roi = g.C * g.pvol;
  const int64_t chunks = (per_roi + kV2Threads * kV2Items - 1) / (kV2Threads * kV2Items);
  if (g.K > 2147483647LL || chunks > 65535 || chunks == 0) return false;
  for (int k = 0; k < 3; ++k)
    if (g.size[k] > 2147483647LL) return false;  // table indices are int32
  grid = dim3(static_cast<unsigned>(g.K), static_cast<unsigned>(chunks));
  return true;
}

KGeom describe(const char* op, const at::Tensor& rois, double spatial_scale, at::IntArrayRef output_size,
               int64_t sampling_ratio, bool aligned, at::IntArrayRef input_shape, at::ScalarType dtype) {
  const int64_t D = static_cast<int64_t>(input_shape.size()) - 2;
  TORCH_CHECK(D == 2 || D == 3, op, ": input must be 4-d (N, C, H, W) or 5-d (N, C, D0, D1, D2), got ",
              input_shape.size(), "-d");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 1 + 2 * D, op, ": rois must have shape (K, ", 1 + 2 * D,
              ") = (batch, lo..., hi...) for ", D, "D input, got ", rois.sizes());
  TORCH_CHECK(rois.scalar_type() == dtype, op, ": rois must have the dtype of the input (", dtype, "), got ",
              rois.scalar_type());
  TORCH_CHECK(static_cast<int64_t>(output_size.size()) == D, op, ": output_size must have ", D, " entries, got ",
              output_size);
  for (auto s : output_size) TORCH_CHECK(s > 0, op, ": output_size must be positive, got ", output_size);
  TORCH_CHECK(std::isfinite(spatial_scale), op, ": spatial_scale must be finite, got ", spatial_scale);
  KGeom g{};
  g.N = input_shape[0];
  g.C = input_shape[1];
  g.K = rois.size(0);
  g.vol = 1;
  g.pvol = 1;
  for (int64_t k = 0; k < D; ++k) {
    g.size[k] = input_shape[2 + k];
    g.pooled[k] = output_size[k];
    g.vol *= g.size[k];
    g.pvol *= g.pooled[k];
  }
  for (int64_t k = D - 1, s = 1; k >= 0; --k) {
    g.stride[k] = s;
    s *= g.size[k];
  }
  g.spatial_scale = spatial_scale;
  g.sampling_ratio = sampling_ratio;
  g.aligned = aligned;
  return g;
}

std::vector<int64_t> out_shape(const KGeom& g, int64_t D) {
  std::vector<int64_t> s{g.K, g.C};
  for (int64_t k = 0; k < D; ++k) s.push_back(g.pooled[k]);
  return s;
}

int64_t blocks_for(int64_t total, int threads) {
  return std::max<int64_t>(1, std::min<int64_t>((total + threads - 1) / threads, int64_t(1) << 20));
}

at::Tensor roi_align_forward_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                  at::IntArrayRef output_size, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(input.is_cuda() && rois.device() == input.device(), "roi_align: input and rois must be on one CUDA device");
  const KGeom g = describe("roi_align", rois, spatial_scale, output_size, sampling_ratio, aligned, input.sizes(),
                           input.scalar_type());
  const int64_t D = input.dim() - 2;
  c10::cuda::CUDAGuard guard(input.device());
  if (g.K == 0 || g.C == 0 || input.numel() == 0) return at::zeros(out_shape(g, D), input.options());
  auto out = at::empty(out_shape(g, D), input.options());  // every element is written
  auto x = input.contiguous();
  auto r = rois.contiguous();
  const int threads = 256;
  const int64_t total = out.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  dim3 grid2;
  const bool v2 = kernel_version() == 2 && v2_grid(g, grid2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_align_forward_cuda", [&] {
    if (v2 && D == 2)
      roi_align_forward_v2_kernel<2, scalar_t><<<grid2, kV2Threads, 0, stream>>>(
          x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, out.data_ptr<scalar_t>());
    else if (v2)
      roi_align_forward_v2_kernel<3, scalar_t><<<grid2, kV2Threads, 0, stream>>>(
          x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, out.data_ptr<scalar_t>());
    else if (D == 2)
      roi_align_forward_kernel<2, scalar_t><<<blocks_for(total, threads), threads, 0, stream>>>(
          x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, total, out.data_ptr<scalar_t>());
    else
      roi_align_forward_kernel<3, scalar_t><<<blocks_for(total, threads), threads, 0, stream>>>(
          x.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, total, out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

template <int D, typename scalar_t>
void backward_gather(const KGeom& g, const at::Tensor& grad, const at::Tensor& rois, at::Tensor& gx,
                     cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  auto geo_buf = at::empty({g.K * static_cast<int64_t>(sizeof(RoiGeo<D, acc_t>))}, grad.options().dtype(at::kByte));
  auto* geo = reinterpret_cast<RoiGeo<D, acc_t>*>(geo_buf.data_ptr());
  const int threads = 256;
  roi_geometry_kernel<D, scalar_t><<<blocks_for(g.K, threads), threads, 0, stream>>>(rois.data_ptr<scalar_t>(), g, geo);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t total = gx.numel();
  roi_align_backward_gather_kernel<D, scalar_t><<<blocks_for(total, threads), threads, 0, stream>>>(
      grad.data_ptr<scalar_t>(), geo, g, total, gx.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   at::IntArrayRef output_size, int64_t sampling_ratio, bool aligned,
                                   at::IntArrayRef input_shape) {
  TORCH_CHECK(grad.is_cuda() && rois.device() == grad.device(),
              "_roi_align_backward: grad and rois must be on one CUDA device");
  const KGeom g = describe("_roi_align_backward", rois, spatial_scale, output_size, sampling_ratio, aligned,
                           input_shape, grad.scalar_type());
  const int64_t D = static_cast<int64_t>(input_shape.size()) - 2;
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(out_shape(g, D)), "_roi_align_backward: grad must have shape ",
              out_shape(g, D), ", got ", grad.sizes());
  c10::cuda::CUDAGuard guard(grad.device());
  auto stream = at::cuda::getCurrentCUDAStream();
  auto gr = grad.contiguous();
  auto r = rois.contiguous();
  if (at::globalContext().deterministicAlgorithms()) {
    if (g.K == 0) return at::zeros(input_shape, grad.options());
    auto gx = at::empty(input_shape, grad.options());  // the gather kernel writes every element
    if (gx.numel() == 0) return gx;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gr.scalar_type(), "roi_align_backward_gather_cuda", [&] {
      if (D == 2)
        backward_gather<2, scalar_t>(g, gr, r, gx, stream);
      else
        backward_gather<3, scalar_t>(g, gr, r, gx, stream);
    });
    return gx;
  }
  auto gx = at::zeros(input_shape, grad.options().dtype(at::toOpMathType(grad.scalar_type())));
  if (gr.numel() > 0 && gx.numel() > 0) {
    const int threads = 256;
    const int64_t total = gr.numel();
    dim3 grid2;
    const bool v2 = kernel_version() == 2 && v2_grid(g, grid2);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gr.scalar_type(), "roi_align_backward_atomic_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      if (v2 && D == 2)
        roi_align_backward_atomic_v2_kernel<2, scalar_t><<<grid2, kV2Threads, 0, stream>>>(
            gr.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, gx.data_ptr<acc_t>());
      else if (v2)
        roi_align_backward_atomic_v2_kernel<3, scalar_t><<<grid2, kV2Threads, 0, stream>>>(
            gr.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, gx.data_ptr<acc_t>());
      else if (D == 2)
        roi_align_backward_atomic_kernel<2, scalar_t><<<blocks_for(total, threads), threads, 0, stream>>>(
            gr.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, total, gx.data_ptr<acc_t>());
      else
        roi_align_backward_atomic_kernel<3, scalar_t><<<blocks_for(total, threads), threads, 0, stream>>>(
            gr.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(), g, total, gx.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return gx.scalar_type() == grad.scalar_type() ? gx : gx.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_unet, CUDA, m) {
  m.impl("roi_align", &roi_align_forward_cuda);
  m.impl("_roi_align_backward", &roi_align_backward_cuda);
}

}  // namespace retina_unet
