// RoIAlign on the CPU, 2D and 3D: separable contraction with interpolation weights shared across
// channels.
//
// Bilinear/trilinear sampling with per-axis rules is separable: a bin's value is
//   (1 / count) * sum_j  W_0[p_0, j_0] * ... * W_{D-1}[p_{D-1}, j_{D-1}] * x[j],
// where W_k[p, j] sums, over the samples of bin p along axis k, the linear weights they put on
// index j. Per roi we build the small rows W_k once (all channels share them), then contract one
// axis at a time over the roi's input region (forward) or expand one axis at a time (backward,
// the exact adjoint). With an adaptive grid of s samples per bin per axis this costs about
// (s + 1) / (2^D s^D) of the per-sample loop that torchvision uses.
//
// Parallelism: forward over (roi, channel); backward over (image, channel), each task visiting
// its rois in index order, so the gradient is race-free and bitwise deterministic whatever the
// thread count (no atomics anywhere on the CPU).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "roi_align_common.h"

namespace retina_unet {
namespace {

using roi_align_detail::Axis;
using roi_align_detail::Interp;

// Aggregated weights of one roi along one axis: bin p puts w[off[p] + t] on index beg[p] + t.
template <typename acc_t>
struct AxisRows {
  int64_t rlo = 0, rhi = -1;  // union of the bins' index ranges; empty when rhi < rlo
  std::vector<int64_t> beg, len, off;
  std::vector<acc_t> w;
};

template <int D, typename acc_t>
struct RoiRows {
  bool empty = true;
  int64_t batch = 0;
  acc_t count = acc_t(1);
  AxisRows<acc_t> ax[D];
};

template <typename acc_t>
void build_rows(const Axis<acc_t>& a, AxisRows<acc_t>& r) {
  const int64_t P = a.pooled;
  r.beg.assign(P, 0);
  r.len.assign(P, 0);
  r.off.assign(P, 0);
  r.w.clear();
  r.rlo = a.size;
  r.rhi = -1;
  for (int64_t p = 0; p < P; ++p) {
    int64_t b, e, mn = a.size, mx = -1;
    roi_align_detail::valid_window(a, p, b, e);
    for (int64_t i = b; i < e; ++i) {  // pass 1: index range (samples are not stored: bounded memory)
      Interp<acc_t> s;
      if (!roi_align_detail::interp(roi_align_detail::sample_coord(a, p, i), a.size, s)) continue;
      mn = std::min(mn, s.lo);
      mx = std::max(mx, s.hi);
    }
    r.off[p] = static_cast<int64_t>(r.w.size());
    if (mx < mn) continue;
    r.beg[p] = mn;
    r.len[p] = mx - mn + 1;
    r.w.resize(r.w.size() + r.len[p], acc_t(0));
    acc_t* w = r.w.data() + r.off[p] - mn;
    for (int64_t i = b; i < e; ++i) {  // pass 2: weights, in sample order
      Interp<acc_t> s;
      if (!roi_align_detail::interp(roi_align_detail::sample_coord(a, p, i), a.size, s)) continue;
      w[s.lo] += s.wl;
      w[s.hi] += s.wh;
    }
    r.rlo = std::min(r.rlo, mn);
    r.rhi = std::max(r.rhi, mx);
  }
}

struct Geometry {
  int64_t D, N, C, K;
  int64_t size[3], pooled[3];
  double spatial_scale;
  int64_t sampling_ratio;
  bool aligned;
};

template <int D, typename acc_t, typename scalar_t>
std::vector<RoiRows<D, acc_t>> build_all_rows(const Geometry& g, const scalar_t* rois) {
  std::vector<RoiRows<D, acc_t>> rows(g.K);
  at::parallel_for(0, g.K, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* roi = rois + r * (1 + 2 * D);
      auto& R = rows[r];
      const acc_t b = static_cast<acc_t>(roi[0]);
      // The Python wrapper reports bad batch indices; here they only must not read out of bounds.
      if (!(b >= acc_t(0) && b < static_cast<acc_t>(g.N))) continue;
      R.batch = static_cast<int64_t>(b);
      bool ok = true;
      Axis<acc_t> ax[D];
      for (int k = 0; k < D && ok; ++k)
        ok = roi_align_detail::make_axis<acc_t>(ax[k], roi[1 + k], roi[1 + D + k], g.spatial_scale, g.aligned,
                                                g.pooled[k], g.sampling_ratio, g.size[k]);
      if (!ok) continue;
      acc_t count = acc_t(1);
      for (int k = 0; k < D; ++k) count = count * static_cast<acc_t>(ax[k].grid);
      R.count = std::max(count, acc_t(1));
      R.empty = false;
      for (int k = 0; k < D; ++k) {
        build_rows(ax[k], R.ax[k]);
        if (R.ax[k].rhi < R.ax[k].rlo) R.empty = true;
      }
    }
  });
  return rows;
}

// Forward for one (roi, channel): x is input[n, c] (contiguous), out has prod(pooled) values.
template <int D, typename acc_t, typename scalar_t>
void contract(const Geometry& g, const RoiRows<D, acc_t>& R, const scalar_t* x, scalar_t* out,
              std::vector<acc_t>& A, std::vector<acc_t>& B) {
  int64_t stride[D], ext[D];
  stride[D - 1] = 1;
  for (int k = D - 2; k >= 0; --k) stride[k] = stride[k + 1] * g.size[k + 1];
  for (int k = 0; k < D; ++k) ext[k] = R.ax[k].rhi - R.ax[k].rlo + 1;
  // Last axis, straight from the input: A[(j_0..j_{D-2}), p_{D-1}].
  const auto& L = R.ax[D - 1];
  const int64_t PL = g.pooled[D - 1];
  int64_t outer = 1;
  for (int k = 0; k < D - 1; ++k) outer *= ext[k];
  A.resize(outer * PL);
  for (int64_t o = 0; o < outer; ++o) {
    int64_t base = 0, rem = o;
    for (int k = D - 2; k >= 0; --k) {
      base += (R.ax[k].rlo + rem % ext[k]) * stride[k];
      rem /= ext[k];
    }
    const scalar_t* row = x + base;
    for (int64_t p = 0; p < PL; ++p) {
      const acc_t* w = L.w.data() + L.off[p];
      const scalar_t* xs = row + L.beg[p];
      acc_t s = acc_t(0);
      for (int64_t t = 0; t < L.len[p]; ++t) s += w[t] * static_cast<acc_t>(xs[t]);
      A[o * PL + p] = s;
    }
  }
  // Remaining axes, last to first: (outer, ext_k, inner) -> (outer, pooled_k, inner).
  int64_t inner = PL;
  for (int k = D - 2; k >= 0; --k) {
    const auto& Ak = R.ax[k];
    outer /= ext[k];
    const int64_t P = g.pooled[k];
    B.assign(outer * P * inner, acc_t(0));
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t p = 0; p < P; ++p) {
        acc_t* dst = B.data() + (o * P + p) * inner;
        const acc_t* w = Ak.w.data() + Ak.off[p];
        for (int64_t t = 0; t < Ak.len[p]; ++t) {
          const acc_t* src = A.data() + (o * ext[k] + (Ak.beg[p] + t - Ak.rlo)) * inner;
          const acc_t wt = w[t];
          for (int64_t q = 0; q < inner; ++q) dst[q] += wt * src[q];
        }
      }
    inner *= P;
    std::swap(A, B);
  }
  for (int64_t q = 0; q < inner; ++q) out[q] = static_cast<scalar_t>(A[q] / R.count);
}

// Adjoint of contract() for one (roi, channel): grad_x[n, c] += W^T (g / count).
template <int D, typename acc_t, typename scalar_t>
void expand(const Geometry& g, const RoiRows<D, acc_t>& R, const scalar_t* grad, acc_t* gx, std::vector<acc_t>& A,
            std::vector<acc_t>& B) {
  int64_t stride[D], ext[D];
  stride[D - 1] = 1;
  for (int k = D - 2; k >= 0; --k) stride[k] = stride[k + 1] * g.size[k + 1];
  for (int k = 0; k < D; ++k) ext[k] = R.ax[k].rhi - R.ax[k].rlo + 1;
  int64_t inner = 1;
  for (int k = 0; k < D; ++k) inner *= g.pooled[k];
  A.resize(inner);
  for (int64_t q = 0; q < inner; ++q) A[q] = static_cast<acc_t>(grad[q]) / R.count;
  // Axes first to last except the last: (outer, pooled_k, inner) -> (outer, ext_k, inner).
  int64_t outer = 1;
  for (int k = 0; k < D - 1; ++k) {
    const auto& Ak = R.ax[k];
    const int64_t P = g.pooled[k];
    inner /= P;
    B.assign(outer * ext[k] * inner, acc_t(0));
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t p = 0; p < P; ++p) {
        const acc_t* src = A.data() + (o * P + p) * inner;
        const acc_t* w = Ak.w.data() + Ak.off[p];
        for (int64_t t = 0; t < Ak.len[p]; ++t) {
          acc_t* dst = B.data() + (o * ext[k] + (Ak.beg[p] + t - Ak.rlo)) * inner;
          const acc_t wt = w[t];
          for (int64_t q = 0; q < inner; ++q) dst[q] += wt * src[q];
        }
      }
    outer *= ext[k];
    std::swap(A, B);
  }
  // Last axis, straight into the gradient.
  const auto& L = R.ax[D - 1];
  const int64_t PL = g.pooled[D - 1];
  for (int64_t o = 0; o < outer; ++o) {
    int64_t base = 0, rem = o;
    for (int k = D - 2; k >= 0; --k) {
      base += (R.ax[k].rlo + rem % ext[k]) * stride[k];
      rem /= ext[k];
    }
    acc_t* row = gx + base;
    for (int64_t p = 0; p < PL; ++p) {
      const acc_t v = A[o * PL + p];
      const acc_t* w = L.w.data() + L.off[p];
      acc_t* gs = row + L.beg[p];
      for (int64_t t = 0; t < L.len[p]; ++t) gs[t] += w[t] * v;
    }
  }
}

Geometry check_and_describe(const char* op, const at::Tensor& rois, double spatial_scale, at::IntArrayRef output_size,
                            int64_t sampling_ratio, bool aligned, at::IntArrayRef input_shape,
                            at::ScalarType dtype) {
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
  Geometry g{};
  g.D = D;
  g.N = input_shape[0];
  g.C = input_shape[1];
  g.K = rois.size(0);
  for (int64_t k = 0; k < D; ++k) {
    g.size[k] = input_shape[2 + k];
    g.pooled[k] = output_size[k];
  }
  g.spatial_scale = spatial_scale;
  g.sampling_ratio = sampling_ratio;
  g.aligned = aligned;
  return g;
}

std::vector<int64_t> out_shape(const Geometry& g) {
  std::vector<int64_t> s{g.K, g.C};
  for (int64_t k = 0; k < g.D; ++k) s.push_back(g.pooled[k]);
  return s;
}

// Work (multiply-adds, roughly) of one channel of all rois: sizes the parallel chunks, so that
// small calls stay on one thread (waking a pool costs more than they do on a loaded machine).
template <int D, typename acc_t>
double rows_work(const std::vector<RoiRows<D, acc_t>>& rows, const Geometry& g) {
  double w = 0;
  for (const auto& R : rows) {
    if (R.empty) continue;
    double v = 1;
    for (int k = 0; k < D; ++k) v *= static_cast<double>(R.ax[k].rhi - R.ax[k].rlo + 1);
    w += 2 * v + 8;
  }
  return w;
}

int64_t grain_for(double work_per_task) {
  constexpr double kMinWork = 1 << 15;
  return static_cast<int64_t>(std::max(1.0, std::ceil(kMinWork / std::max(work_per_task, 1.0))));
}

template <int D, typename scalar_t>
void forward_impl(const Geometry& g, const at::Tensor& x, const at::Tensor& rois, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto rows = build_all_rows<D, acc_t>(g, rois.data_ptr<scalar_t>());
  int64_t vol = 1, pvol = 1;
  for (int k = 0; k < D; ++k) vol *= g.size[k], pvol *= g.pooled[k];
  const scalar_t* px = x.data_ptr<scalar_t>();
  scalar_t* po = out.data_ptr<scalar_t>();
  const int64_t grain = grain_for(rows_work(rows, g) / static_cast<double>(std::max<int64_t>(g.K, 1)) + pvol);
  at::parallel_for(0, g.K * g.C, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> A, B;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r = t / g.C, c = t % g.C;
      const auto& R = rows[r];
      scalar_t* o = po + t * pvol;
      if (R.empty) {
        std::fill(o, o + pvol, scalar_t(0));
        continue;
      }
      contract<D, acc_t, scalar_t>(g, R, px + (R.batch * g.C + c) * vol, o, A, B);
    }
  });
}

template <int D, typename scalar_t>
void backward_impl(const Geometry& g, const at::Tensor& grad, const at::Tensor& rois, at::Tensor& gx_acc) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto rows = build_all_rows<D, acc_t>(g, rois.data_ptr<scalar_t>());
  int64_t vol = 1, pvol = 1;
  for (int k = 0; k < D; ++k) vol *= g.size[k], pvol *= g.pooled[k];
  std::vector<std::vector<int64_t>> by_image(g.N);
  for (int64_t r = 0; r < g.K; ++r)
    if (!rows[r].empty) by_image[rows[r].batch].push_back(r);
  const scalar_t* pg = grad.data_ptr<scalar_t>();
  acc_t* pgx = gx_acc.data_ptr<acc_t>();
  const int64_t grain = grain_for(rows_work(rows, g) / static_cast<double>(std::max<int64_t>(g.N, 1)));
  at::parallel_for(0, g.N * g.C, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> A, B;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / g.C, c = t % g.C;
      for (int64_t r : by_image[n])  // index order: deterministic
        expand<D, acc_t, scalar_t>(g, rows[r], pg + (r * g.C + c) * pvol, pgx + t * vol, A, B);
    }
  });
}

template <typename scalar_t>
void check_batch_indices(const char* op, const at::Tensor& rois, int64_t N) {
  const scalar_t* r = rois.data_ptr<scalar_t>();
  const int64_t K = rois.size(0), width = rois.size(1);
  for (int64_t i = 0; i < K; ++i) {
    const double b = static_cast<double>(r[i * width]);
    TORCH_CHECK(b >= 0 && b < static_cast<double>(N) && b == std::floor(b), op, ": rois[", i,
                ", 0] (batch index) must be an integer in [0, ", N, "), got ", b);
  }
}

at::Tensor roi_align_forward_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                 at::IntArrayRef output_size, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), "roi_align: input and rois must be CPU tensors");
  const Geometry g = check_and_describe("roi_align", rois, spatial_scale, output_size, sampling_ratio, aligned,
                                        input.sizes(), input.scalar_type());
  auto out = at::empty(out_shape(g), input.options());  // every element is written below
  if (out.numel() == 0) return out;
  if (input.numel() == 0) return out.zero_();
  auto x = input.contiguous();
  auto r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "roi_align_forward_cpu", [&] {
    check_batch_indices<scalar_t>("roi_align", r, g.N);
    if (g.D == 2)
      forward_impl<2, scalar_t>(g, x, r, out);
    else
      forward_impl<3, scalar_t>(g, x, r, out);
  });
  return out;
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  at::IntArrayRef output_size, int64_t sampling_ratio, bool aligned,
                                  at::IntArrayRef input_shape) {
  TORCH_CHECK(grad.device().is_cpu() && rois.device().is_cpu(), "_roi_align_backward: grad and rois must be CPU tensors");
  const Geometry g = check_and_describe("_roi_align_backward", rois, spatial_scale, output_size, sampling_ratio,
                                        aligned, input_shape, grad.scalar_type());
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(out_shape(g)), "_roi_align_backward: grad must have shape ",
              out_shape(g), ", got ", grad.sizes());
  const auto acc_type = at::toOpMathType(grad.scalar_type());
  auto gx = at::zeros(input_shape, grad.options().dtype(acc_type));
  if (grad.numel() == 0 || gx.numel() == 0) return gx.to(grad.scalar_type());
  auto gr = grad.contiguous();
  auto r = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gr.scalar_type(), "roi_align_backward_cpu", [&] {
    check_batch_indices<scalar_t>("_roi_align_backward", r, g.N);
    if (g.D == 2)
      backward_impl<2, scalar_t>(g, gr, r, gx);
    else
      backward_impl<3, scalar_t>(g, gr, r, gx);
  });
  return gx.scalar_type() == grad.scalar_type() ? gx : gx.to(grad.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_unet, CPU, m) {
  m.impl("roi_align", &roi_align_forward_cpu);
  m.impl("_roi_align_backward", &roi_align_backward_cpu);
}

}  // namespace retina_unet
