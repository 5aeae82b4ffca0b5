// NMS on the CPU.
//
// Greedy in score order, but a candidate is compared only with the kept boxes that can overlap it:
// kept boxes are filed in a uniform grid (cell ~ 2x the median box extent per axis), a candidate
// looks only in the cells it covers. A box can have IoU > t >= 0 with another only if they overlap,
// and overlapping boxes always share a cell (the cell index is a monotonic function of the
// coordinate), so the result is exactly the plain greedy one. Sparse inputs (medical: few
// overlaps) cost O(N) IoUs instead of O(N * kept); clustered inputs stop at the first suppressor.
// Boxes covering many cells are kept in a short list checked by every candidate.
// batched_nms runs one greedy per group (groups in parallel) and merges by score.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "box_geometry.h"
#include "nms_common.h"

namespace retina_unet {
namespace {

using nms_detail::check_nms_args;
using nms_detail::threshold_as;

constexpr int64_t kParallelMinBoxes = 32768;

// Uniform grid over a set of boxes: cell range of a box per axis.
template <int D>
struct Grid {
  double origin[D];
  double inv_cell[D];
  int64_t ncell[D];
  int64_t stride[D];
  int64_t total = 1;

  template <typename acc_t>
  void cells_of(const acc_t* b, int64_t* lo, int64_t* hi) const {
    for (int k = 0; k < D; ++k) {
      lo[k] = index(k, b[k]);
      hi[k] = index(k, b[k + D]);
    }
  }
  // Monotonic non-decreasing in x (rounding and floor are), clamped to the grid.
  int64_t index(int k, double x) const {
    double c = std::floor((x - origin[k]) * inv_cell[k]);
    if (!(c > 0.0)) return 0;
    if (c >= static_cast<double>(ncell[k] - 1)) return ncell[k] - 1;
    return static_cast<int64_t>(c);
  }
};

// Grid for the valid (positive-volume) boxes among sb[0..n): about 2 * n_valid cells at most.
template <int D, typename acc_t>
Grid<D> make_grid(const acc_t* sb, const acc_t* vol, int64_t n) {
  Grid<D> g;
  std::vector<double> ext;
  ext.reserve(n);
  for (int k = 0; k < D; ++k) {
    double lo = INFINITY, hi = -INFINITY;
    ext.clear();
    for (int64_t p = 0; p < n; ++p) {
      if (!(vol[p] > acc_t(0))) continue;
      const acc_t* b = sb + p * 2 * D;
      lo = std::min(lo, double(b[k]));
      hi = std::max(hi, double(b[k + D]));
      ext.push_back(double(b[k + D]) - double(b[k]));
    }
    if (ext.empty()) {
      lo = 0.0;
      hi = 1.0;
      ext.push_back(1.0);
    }
    std::nth_element(ext.begin(), ext.begin() + ext.size() / 2, ext.end());
    const double range = std::max(hi - lo, 1e-300);
    const double cell = std::max(2.0 * ext[ext.size() / 2], 1e-300);
    const double want = std::floor(range / cell);
    g.origin[k] = lo;
    g.ncell[k] = want < 1.0 ? 1 : (want > 1e6 ? int64_t(1e6) : int64_t(want));
  }
  const int64_t max_cells = std::max<int64_t>(1, 2 * n);
  auto prod = [&] {
    int64_t t = 1;
    for (int k = 0; k < D; ++k) t *= g.ncell[k];
    return t;
  };
  while (prod() > max_cells) {  // halve the finest axis until the grid is O(n)
    int kmax = 0;
    for (int k = 1; k < D; ++k)
      if (g.ncell[k] > g.ncell[kmax]) kmax = k;
    g.ncell[kmax] = std::max<int64_t>(1, g.ncell[kmax] / 2);
  }
  g.total = prod();
  for (int k = 0; k < D; ++k) {
    double hi = -INFINITY;
    for (int64_t p = 0; p < n; ++p)
      if (vol[p] > acc_t(0)) hi = std::max(hi, double(sb[p * 2 * D + k + D]));
    const double range = hi > g.origin[k] ? hi - g.origin[k] : 1.0;
    g.inv_cell[k] = double(g.ncell[k]) / range;
  }
  g.stride[D - 1] = 1;
  for (int k = D - 2; k >= 0; --k) g.stride[k] = g.stride[k + 1] * g.ncell[k + 1];
  return g;
}

// Calls f(cell) for every cell in the box [lo, hi]; stops early when f returns true.
template <int D, typename F>
bool any_cell(const Grid<D>& g, const int64_t* lo, const int64_t* hi, F&& f) {
  if constexpr (D == 2) {
    for (int64_t a = lo[0]; a <= hi[0]; ++a)
      for (int64_t b = lo[1]; b <= hi[1]; ++b)
        if (f(a * g.stride[0] + b)) return true;
  } else {
    for (int64_t a = lo[0]; a <= hi[0]; ++a)
      for (int64_t b = lo[1]; b <= hi[1]; ++b)
        for (int64_t c = lo[2]; c <= hi[2]; ++c)
          if (f(a * g.stride[0] + b * g.stride[1] + c)) return true;
  }
  return false;
}

// Greedy NMS over boxes already in candidate order: sb is (n, 2D) packed in acc_t. Appends the
// kept positions (0..n) to `kept`, at most `limit` of them.
template <int D, typename acc_t>
void greedy_sorted(const acc_t* sb, int64_t n, acc_t thr, int64_t limit, std::vector<int64_t>& kept) {
  if (n == 0 || limit == 0) return;
  std::vector<acc_t> vol(n);
  for (int64_t p = 0; p < n; ++p) vol[p] = box_volume<D, acc_t>(sb + p * 2 * D);
  if (!(thr < acc_t(1))) {  // IoU <= 1: nothing can be suppressed
    for (int64_t p = 0; p < std::min(n, limit); ++p) kept.push_back(p);
    return;
  }
  const Grid<D> g = make_grid<D, acc_t>(sb, vol.data(), n);
  constexpr int64_t kBigCells = D == 2 ? 16 : 64;
  std::vector<int64_t> head(g.total, -1);  // per cell: last node
  std::vector<int64_t> node_next, node_box;
  node_next.reserve(4 * n);
  node_box.reserve(4 * n);
  std::vector<int64_t> big;         // kept boxes covering more than kBigCells cells
  std::vector<int64_t> stamp(n, -1);  // kept box -> last candidate that looked at it
  const size_t first = kept.size();
  int64_t lo[D], hi[D];

  for (int64_t p = 0; p < n && int64_t(kept.size() - first) < limit; ++p) {
    const acc_t* b = sb + p * 2 * D;
    const acc_t vb = vol[p];
    if (!(vb > acc_t(0))) {  // degenerate: never suppressed, never suppresses
      kept.push_back(p);
      continue;
    }
    auto suppresses = [&](int64_t q) {
      return box_iou_with_volumes<D, acc_t>(sb + q * 2 * D, b, vol[q], vb) > thr;
    };
    g.cells_of(b, lo, hi);
    int64_t ncells = 1;
    for (int k = 0; k < D; ++k) ncells *= hi[k] - lo[k] + 1;
    bool suppressed = false;
    if (ncells > kBigCells) {
      for (size_t r = first; r < kept.size() && !suppressed; ++r) suppressed = suppresses(kept[r]);
    } else {
      for (size_t r = 0; r < big.size() && !suppressed; ++r) suppressed = suppresses(big[r]);
      if (!suppressed)
        suppressed = any_cell<D>(g, lo, hi, [&](int64_t cell) {
          for (int64_t node = head[cell]; node >= 0; node = node_next[node]) {
            const int64_t q = node_box[node];
            if (stamp[q] == p) continue;
            stamp[q] = p;
            if (suppresses(q)) return true;
          }
          return false;
        });
    }
    if (suppressed) continue;
    kept.push_back(p);
    if (ncells > kBigCells) {
      big.push_back(p);
    } else {
      any_cell<D>(g, lo, hi, [&](int64_t cell) {
        node_next.push_back(head[cell]);
        node_box.push_back(p);
        head[cell] = int64_t(node_box.size()) - 1;
        return false;
      });
    }
  }
}

template <typename acc_t>
void check_finite(const char* op, const acc_t* boxes, int64_t nb, const acc_t* scores, int64_t n) {
  for (int64_t i = 0; i < nb; ++i)
    TORCH_CHECK(std::isfinite(boxes[i]), op, ": boxes contains NaN or infinite coordinates");
  for (int64_t i = 0; i < n; ++i) TORCH_CHECK(!std::isnan(scores[i]), op, ": scores contains NaN");
}

// Kept original indices, ordered by score descending then index ascending, at most `limit`.
template <int D, typename acc_t>
std::vector<int64_t> nms_impl(const char* op, const at::Tensor& boxes, const at::Tensor& scores,
                              const at::Tensor* groups, double iou_threshold, int64_t limit) {
  const int64_t n = boxes.size(0);
  const acc_t* pb = boxes.data_ptr<acc_t>();
  const acc_t* ps = scores.data_ptr<acc_t>();
  const int64_t* pg = groups != nullptr ? groups->data_ptr<int64_t>() : nullptr;
  check_finite(op, pb, n * 2 * D, ps, n);
  const acc_t thr = threshold_as<acc_t>(iou_threshold);
  auto by_score = [&](int64_t a, int64_t b) { return ps[a] > ps[b] || (ps[a] == ps[b] && a < b); };

  // Candidate order: (group, score desc, index); one segment per group.
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), int64_t(0));
  if (pg == nullptr)
    std::sort(order.begin(), order.end(), by_score);
  else
    std::sort(order.begin(), order.end(),
              [&](int64_t a, int64_t b) { return pg[a] < pg[b] || (pg[a] == pg[b] && by_score(a, b)); });
  // Packed in candidate order (serial: a copy is memory-bound, threads only add wake-up latency).
  std::vector<acc_t> sb(n * 2 * D);
  for (int64_t p = 0; p < n; ++p) std::copy(pb + order[p] * 2 * D, pb + (order[p] + 1) * 2 * D, sb.data() + p * 2 * D);
  std::vector<int64_t> seg{0};
  if (pg != nullptr)
    for (int64_t p = 1; p < n; ++p)
      if (pg[order[p]] != pg[order[p - 1]]) seg.push_back(p);
  seg.push_back(n);
  const int64_t nseg = int64_t(seg.size()) - 1;

  // Groups in parallel, but only when there is enough work: measured on 2 busy cores, waking the
  // pool costs more than a greedy pass over 10k sparse boxes (~2 ms).
  std::vector<std::vector<int64_t>> kept(nseg);
  const int64_t grain = n >= kParallelMinBoxes ? 1 : std::max<int64_t>(nseg, 1);
  at::parallel_for(0, nseg, grain, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) {
      greedy_sorted<D, acc_t>(sb.data() + seg[s] * 2 * D, seg[s + 1] - seg[s], thr, limit, kept[s]);
      for (auto& p : kept[s]) p = order[seg[s] + p];
    }
  });
  if (nseg == 1) return std::move(kept[0]);
  std::vector<int64_t> out;
  for (auto& k : kept) out.insert(out.end(), k.begin(), k.end());
  std::sort(out.begin(), out.end(), by_score);  // merge the groups by score
  if (int64_t(out.size()) > limit) out.resize(limit);
  return out;
}

std::vector<int64_t> nms_core(const char* op, const at::Tensor& boxes_in, const at::Tensor& scores_in,
                              const at::Tensor* groups_in, double iou_threshold, int64_t max_output,
                              bool padded) {
  check_nms_args(op, boxes_in, scores_in, groups_in, iou_threshold, max_output, padded);
  TORCH_CHECK(boxes_in.device().is_cpu(), op, ": expected CPU tensors, got ", boxes_in.device());
  const int64_t n = boxes_in.size(0);
  const int64_t limit = max_output < 0 ? n : std::min(n, max_output);
  if (n == 0 || limit == 0) return {};
  // half/bfloat16 are computed in float32 (exact conversions: same IoUs, same score order).
  const auto acc = boxes_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor boxes = boxes_in.to(acc).contiguous();
  const at::Tensor scores = scores_in.to(acc).contiguous();
  at::Tensor groups;
  if (groups_in != nullptr) groups = groups_in->contiguous();
  const at::Tensor* gp = groups_in != nullptr ? &groups : nullptr;
  std::vector<int64_t> out;
  AT_DISPATCH_FLOATING_TYPES(acc, "nms_cpu", [&] {
    if (boxes.size(1) == 4)
      out = nms_impl<2, scalar_t>(op, boxes, scores, gp, iou_threshold, limit);
    else
      out = nms_impl<3, scalar_t>(op, boxes, scores, gp, iou_threshold, limit);
  });
  return out;
}

at::Tensor to_tensor(const std::vector<int64_t>& v) {
  at::Tensor t = at::empty({int64_t(v.size())}, at::TensorOptions().dtype(at::kLong));
  std::copy(v.begin(), v.end(), t.data_ptr<int64_t>());
  return t;
}

std::tuple<at::Tensor, at::Tensor> to_padded(const std::vector<int64_t>& v, int64_t max_output) {
  at::Tensor t = at::full({max_output}, -1, at::TensorOptions().dtype(at::kLong));
  std::copy(v.begin(), v.end(), t.data_ptr<int64_t>());
  return {t, at::scalar_tensor(int64_t(v.size()), at::TensorOptions().dtype(at::kLong))};
}

at::Tensor nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, int64_t max_output) {
  return to_tensor(nms_core("nms", boxes, scores, nullptr, iou_threshold, max_output, false));
}

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& groups,
                           double iou_threshold, int64_t max_output) {
  return to_tensor(nms_core("batched_nms", boxes, scores, &groups, iou_threshold, max_output, false));
}

std::tuple<at::Tensor, at::Tensor> nms_padded_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                                                  double iou_threshold, int64_t max_output) {
  return to_padded(nms_core("nms_padded", boxes, scores, nullptr, iou_threshold, max_output, true), max_output);
}

std::tuple<at::Tensor, at::Tensor> batched_nms_padded_cpu(const at::Tensor& boxes, const at::Tensor& scores,
                                                          const at::Tensor& groups, double iou_threshold,
                                                          int64_t max_output) {
  return to_padded(nms_core("batched_nms_padded", boxes, scores, &groups, iou_threshold, max_output, true),
                   max_output);
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_unet, CPU, m) {
  m.impl("nms", &nms_cpu);
  m.impl("batched_nms", &batched_nms_cpu);
  m.impl("nms_padded", &nms_padded_cpu);
  m.impl("batched_nms_padded", &batched_nms_padded_cpu);
}

}  // namespace retina_unet
