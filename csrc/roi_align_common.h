// RoIAlign sampling geometry shared by the CPU and CUDA kernels (2D and 3D, one code path).
//
// Semantics (docs/conventions.md, "RoIAlign"): torchvision's rules applied per axis k. A roi is
// (batch, lo_0..lo_{D-1}, hi_0..hi_{D-1}); along axis k
//   start = lo * spatial_scale - offset (offset 0.5 when aligned), extent = hi * scale - offset - start,
//   extent = max(extent, 1) when !aligned, bin = extent / pooled,
//   grid  = sampling_ratio > 0 ? sampling_ratio : ceil(extent / pooled)   (samples per bin),
//   y(p, i) = (start + p * bin) + ((i + 0.5) * bin) / grid,
// a sample outside [-1, size] contributes 0, one in [-1, 0) is clamped to 0 and one in
// (size - 1, size] to size - 1; the bin value is the sum of the (bi/tri)linear samples / count,
// count = max(prod_k grid_k, 1). Coordinates are computed in acc_t (float32 for half/bfloat16/float,
// float64 for double), in torchvision's operation order.
//
// Robustness (documented in retina_unet/ops/roi_align.py):
// - a roi whose scaled start or extent is not finite (NaN/inf coordinates, overflow) gives zeros;
// - grid is capped at kMaxGrid samples per bin per axis (beyond 2^24, consecutive sample indices
//   are not representable in float32 anyway); count uses the capped grid;
// - only samples that can land in [-1, size] are visited ("windows" below, computed
//   conservatively and then checked exactly), so a giant roi costs O(input size), never
//   O(roi extent), and no index is ever formed outside [0, size - 1].
#pragma once

#include <cmath>
#include <cstdint>

#include "box_geometry.h"  // RUNET_HD, mul_rn

namespace retina_unet {
namespace roi_align_detail {

constexpr int64_t kMaxGrid = int64_t(1) << 24;

template <typename T>
RUNET_HD bool is_finite(T x) {
  return (x - x) == T(0);  // false for NaN and +-inf
}

template <typename T>
RUNET_HD T tmin(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
RUNET_HD T tmax(T a, T b) {
  return a < b ? b : a;
}

template <typename acc_t>
RUNET_HD double acc_eps() {
  return sizeof(acc_t) == 4 ? 1.2e-7 : 2.3e-16;
}

// One axis of one roi.
template <typename acc_t>
struct Axis {
  acc_t start = 0;   // lower edge of bin 0 (scaled, shifted)
  acc_t bin = 0;     // bin extent (may be <= 0 when aligned and the roi is inverted)
  int64_t grid = 0;  // samples per bin (>= 0, <= kMaxGrid)
  int64_t pooled = 1;
  int64_t size = 1;  // input extent along this axis (>= 1)
};

// Fills `a`; returns false when the roi is not finite along this axis (the roi then gives zeros).
template <typename acc_t, typename scalar_t>
RUNET_HD bool make_axis(Axis<acc_t>& a, scalar_t lo, scalar_t hi, double spatial_scale, bool aligned,
                        int64_t pooled, int64_t sampling_ratio, int64_t size) {
  const double offset = aligned ? 0.5 : 0.0;
  // torchvision computes `roi * spatial_scale - offset` in double and rounds once to acc_t.
  a.start = static_cast<acc_t>(mul_rn(static_cast<double>(lo), spatial_scale) - offset);
  const acc_t end = static_cast<acc_t>(mul_rn(static_cast<double>(hi), spatial_scale) - offset);
  acc_t extent = end - a.start;
  if (!aligned) extent = tmax(extent, acc_t(1));
  a.pooled = pooled;
  a.size = size;
  if (!is_finite(a.start) || !is_finite(extent)) return false;
  a.bin = extent / static_cast<acc_t>(pooled);
  if (sampling_ratio > 0) {
    a.grid = tmin(sampling_ratio, kMaxGrid);
  } else {
    const acc_t g = ceil(extent / static_cast<acc_t>(pooled));
    a.grid = g > acc_t(0) ? (g < acc_t(kMaxGrid) ? static_cast<int64_t>(g) : kMaxGrid) : 0;
  }
  return true;
}

// Sample coordinate i of bin p (torchvision's operation order, no FMA contraction).
template <typename acc_t>
RUNET_HD acc_t sample_coord(const Axis<acc_t>& a, int64_t p, int64_t i) {
  return (a.start + mul_rn(static_cast<acc_t>(p), a.bin)) +
         mul_rn(static_cast<acc_t>(i) + acc_t(0.5), a.bin) / static_cast<acc_t>(a.grid);
}

// Linear interpolation along one axis: weight `wl` on index `lo`, `wh` on index `hi`.
template <typename acc_t>
struct Interp {
  int64_t lo, hi;
  acc_t wl, wh;
};

// Returns false when the sample contributes nothing (outside [-1, size]).
template <typename acc_t>
RUNET_HD bool interp(acc_t y, int64_t size, Interp<acc_t>& s) {
  if (!(y >= acc_t(-1)) || y > static_cast<acc_t>(size)) return false;  // also rejects NaN
  if (y <= acc_t(0)) y = acc_t(0);
  s.lo = static_cast<int64_t>(y);
  if (s.lo >= size - 1) {
    s.lo = s.hi = size - 1;
    y = static_cast<acc_t>(s.lo);
  } else {
    s.hi = s.lo + 1;
  }
  const acc_t l = y - static_cast<acc_t>(s.lo);
  s.wh = l;
  s.wl = acc_t(1) - l;
  return true;
}

// Conservative range [begin, end) of the sample indices of bin p whose coordinate can lie in
// [ylo, yhi]; every sample in it is still checked exactly with interp(). Bounded by grid.
template <typename acc_t>
RUNET_HD void sample_window(const Axis<acc_t>& a, int64_t p, double ylo, double yhi, int64_t& begin,
                            int64_t& end) {
  begin = 0;
  end = a.grid;
  if (a.grid <= 0) return;
  const double base = static_cast<double>(a.start) + static_cast<double>(p) * static_cast<double>(a.bin);
  const double step = static_cast<double>(a.bin) / static_cast<double>(a.grid);
  if (!(step != 0.0) || !is_finite(step) || !is_finite(base)) return;  // degenerate: visit all
  // Coordinates are rounded in acc_t: widen by a bound on that rounding (matters for giant rois).
  const double slack = 8.0 * acc_eps<acc_t>() * (fabs(static_cast<double>(a.start)) + fabs(base) + fabs(2.0 * a.bin));
  double t0 = (ylo - slack - base) / step - 0.5, t1 = (yhi + slack - base) / step - 0.5;
  if (t1 < t0) {
    const double t = t0;
    t0 = t1;
    t1 = t;
  }
  const double g = static_cast<double>(a.grid);
  t0 = tmin(tmax(floor(t0) - 2.0, 0.0), g);  // clamp before converting: no overflow
  t1 = tmin(tmax(ceil(t1) + 3.0, 0.0), g);
  begin = static_cast<int64_t>(t0);
  end = static_cast<int64_t>(t1);
}

// Samples of bin p that can contribute at all.
template <typename acc_t>
RUNET_HD void valid_window(const Axis<acc_t>& a, int64_t p, int64_t& begin, int64_t& end) {
  sample_window(a, p, -1.0, static_cast<double>(a.size), begin, end);
}

// Coordinate interval whose samples can touch input index j (clamping included).
template <typename acc_t>
RUNET_HD void touching_interval(const Axis<acc_t>& a, int64_t j, double& ylo, double& yhi) {
  ylo = j == 0 ? -1.0 : static_cast<double>(j) - 1.0;
  yhi = j == a.size - 1 ? static_cast<double>(a.size) : static_cast<double>(j) + 1.0;
}

// Conservative range [begin, end) of bins that can have a sample touching input index j.
template <typename acc_t>
RUNET_HD void bins_touching(const Axis<acc_t>& a, int64_t j, int64_t& begin, int64_t& end) {
  begin = 0;
  end = a.pooled;
  double ylo, yhi;
  touching_interval(a, j, ylo, yhi);
  const double bin = static_cast<double>(a.bin), start = static_cast<double>(a.start);
  if (!(bin != 0.0)) return;
  const double slack = 8.0 * acc_eps<acc_t>() * (fabs(start) + fabs(bin) * (static_cast<double>(a.pooled) + 1.0));
  double t0 = (ylo - slack - start) / bin, t1 = (yhi + slack - start) / bin;
  if (t1 < t0) {
    const double t = t0;
    t0 = t1;
    t1 = t;
  }
  const double P = static_cast<double>(a.pooled);
  t0 = tmin(tmax(floor(t0) - 1.0, 0.0), P);
  t1 = tmin(tmax(ceil(t1) + 2.0, 0.0), P);
  begin = static_cast<int64_t>(t0);
  end = static_cast<int64_t>(t1);
}

// Total weight that bin p puts on input index j along this axis (sum over its samples).
template <typename acc_t>
RUNET_HD acc_t axis_weight(const Axis<acc_t>& a, int64_t p, int64_t j) {
  double ylo, yhi;
  touching_interval(a, j, ylo, yhi);
  int64_t b, e;
  sample_window(a, p, ylo, yhi, b, e);
  acc_t w = acc_t(0);
  for (int64_t i = b; i < e; ++i) {
    Interp<acc_t> s;
    if (!interp(sample_coord(a, p, i), a.size, s)) continue;
    if (s.lo == j) w += s.wl;
    if (s.hi == j) w += s.wh;
  }
  return w;
}

// Conservative input index range [lo, hi] touched by the whole roi along this axis; false if none.
template <typename acc_t>
RUNET_HD bool touched_range(const Axis<acc_t>& a, int64_t& lo, int64_t& hi) {
  if (a.grid <= 0) return false;
  const double s = static_cast<double>(a.start);
  const double e = s + static_cast<double>(a.pooled) * static_cast<double>(a.bin);
  const double slack = 8.0 * acc_eps<acc_t>() * (fabs(s) + fabs(e) + fabs(static_cast<double>(a.bin)));
  const double ymin = tmin(s, e) - slack, ymax = tmax(s, e) + slack;
  const double size = static_cast<double>(a.size);
  if (ymax < -2.0 || ymin > size + 1.0) return false;
  lo = static_cast<int64_t>(tmin(tmax(floor(ymin) - 1.0, 0.0), size - 1.0));
  hi = static_cast<int64_t>(tmin(tmax(floor(ymax) + 2.0, 0.0), size - 1.0));
  return true;
}

}  // namespace roi_align_detail
}  // namespace retina_unet
