// NMS on CUDA, plain and batched, exact-size and padded (sync-free), in one pipeline:
//
//  1. Candidate order on the device: a stable sort by score (descending; ties keep index order),
//     then, for batched NMS, a stable sort by group: positions are (group, score desc, index).
//  2. Mask kernel: for row box i and the 64 columns of a column block, a 64-bit word with bit j set
//     when IoU(i, j) > t, for j > i in i's group segment only. Masks are stored as a band: row i
//     keeps W words for the column blocks rb(i) .. rb(i) + W - 1, where W covers the largest group;
//     so batched NMS costs sum over groups of n_g^2 (one launch for all groups), not N^2.
//  3. Greedy kernel, one thread block, on the device: per block of 64 candidates one thread
//     resolves the 64 candidates with the diagonal words, then all threads OR the kept rows' words
//     into the `removed` bitset. Two barriers per 64 candidates; no host round trip. It stops after
//     max_output kept boxes (per group when batched).
//  4. Kept positions -> input indices; batched results re-sorted by global score rank.
// Only the exact-size ops synchronise (to size the output, and batched_nms to size W); the padded
// ops never do. Input validation does not add a sync: a status kernel records NaN/inf coordinates
// and NaN scores in a device word that the exact-size ops read together with the kept count (one
// copy), and raise on; the padded ops skip it (the Python wrapper checks them under a debug switch).
//
// Kernel generations (kernel_version.h): v1 is the greedy kernel below; v2 (opt-in until it has
// passed the CUDA tests and compute-sanitizer on a GPU) keeps `removed` in shared memory, skips
// blocks of 64 candidates that are already fully suppressed without a barrier, walks the
// survivors of a block with find-first-set, and ORs kept rows with batches of independent loads. IoU uses box_geometry.h, which rounds like the CPU kernel (bit-identical decisions).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "box_geometry.h"
#include "kernel_version.h"
#include "nms_common.h"

namespace retina_unet {
namespace {

using nms_detail::check_nms_args;
using nms_detail::threshold_as;

__host__ __device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kBlock = 64;           // boxes per mask word
constexpr int kGreedyThreads = 512;  // threads of the single greedy block

// seg_end[p]: one past the last position of p's group; seg_len[p] (optional): the group's size.
__global__ void segment_kernel(const int64_t* __restrict__ gs, int64_t n, int64_t* __restrict__ seg_end,
                               int64_t* __restrict__ seg_len) {
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < n; p += (int64_t)blockDim.x * gridDim.x) {
    const int64_t g = gs[p];
    int64_t lo = p + 1, hi = n;  // upper bound
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (gs[mid] <= g) lo = mid + 1; else hi = mid;
    }
    seg_end[p] = lo;
    if (seg_len != nullptr) {
      int64_t a = 0, b = p;  // lower bound
      while (a < b) {
        const int64_t mid = a + (b - a) / 2;
        if (gs[mid] < g) a = mid + 1; else b = mid;
      }
      seg_len[p] = seg_end[p] - a;
    }
  }
}

// Grid (row blocks, W): block (rb, w) writes word w of the 64 rows of row block rb.
template <int D, typename T>
__global__ void __launch_bounds__(kBlock) nms_mask_kernel(const T* __restrict__ sb, int64_t n, int64_t W,
                                                          const int64_t* __restrict__ seg_end, T thr,
                                                          uint64_t* __restrict__ mask) {
  const int64_t rb = blockIdx.x, w = blockIdx.y;
  const int64_t row0 = rb * kBlock, col0 = (rb + w) * kBlock;
  if (col0 >= n) return;
  const int64_t last_row = imin(row0 + kBlock - 1, n - 1);
  // No row of this block has a column here; the greedy kernel never reads these words.
  if (seg_end != nullptr && col0 >= seg_end[last_row]) return;
  __shared__ T cols[kBlock * 2 * D];
  __shared__ T col_vol[kBlock];
  const int t = threadIdx.x;
  const int ncol = (int)imin(kBlock, n - col0);
  if (t < ncol) {
#pragma unroll
    for (int k = 0; k < 2 * D; ++k) cols[t * 2 * D + k] = sb[(col0 + t) * 2 * D + k];
    col_vol[t] = box_volume<D, T>(sb + (col0 + t) * 2 * D);
  }
  __syncthreads();
  const int64_t i = row0 + t;
  if (i >= n) return;
  T a[2 * D];
#pragma unroll
  for (int k = 0; k < 2 * D; ++k) a[k] = sb[i * 2 * D + k];
  const T va = box_volume<D, T>(a);
  const int64_t end_i = seg_end != nullptr ? seg_end[i] : n;
  uint64_t bits = 0;
  for (int j = (w == 0 ? t + 1 : 0); j < ncol && col0 + j < end_i; ++j)
    if (box_iou_with_volumes<D, T>(a, cols + j * 2 * D, va, col_vol[j]) > thr) bits |= 1ull << j;
  mask[i * W + w] = bits;
}

// One block. keep_pos receives kept positions in candidate order; *num_kept their count.
// max_output < 0: no limit; it bounds the total (gs == nullptr) or each group (batched).
__global__ void __launch_bounds__(kGreedyThreads)
    nms_greedy_kernel(const uint64_t* __restrict__ mask, int64_t n, int64_t W, const int64_t* __restrict__ seg_end,
                      const int64_t* __restrict__ gs, int64_t max_output, uint64_t* __restrict__ removed,
                      int64_t* __restrict__ keep_pos, int64_t* __restrict__ num_kept) {
  __shared__ uint64_t diag[kBlock];
  __shared__ int64_t grp[kBlock];
  __shared__ uint64_t kept_bits;
  __shared__ int stop;
  const int t = threadIdx.x;
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  int64_t count = 0, gcount = 0, group = 0;  // used by thread 0 only
  bool have_group = false;
  if (t == 0) stop = 0;
  __syncthreads();
  for (int64_t rb = 0; rb < nblocks; ++rb) {
    const int64_t row0 = rb * kBlock;
    const int rows = (int)imin(kBlock, n - row0);
    if (t < rows) {  // loaded in parallel: thread 0's sequential pass then reads shared memory only
      diag[t] = mask[(row0 + t) * W];
      if (gs != nullptr) grp[t] = gs[row0 + t];
    }
    __syncthreads();
    if (t == 0) {
      uint64_t cur = removed[rb], kb = 0;
      for (int b = 0; b < rows; ++b) {
        if ((cur >> b) & 1ull) continue;
        const int64_t i = row0 + b;
        if (gs != nullptr) {
          if (!have_group || grp[b] != group) {
            have_group = true;
            group = grp[b];
            gcount = 0;
          }
          if (max_output >= 0 && gcount >= max_output) continue;  // group full: neither kept nor suppressing
          ++gcount;
        }
        keep_pos[count++] = i;
        kb |= 1ull << b;
        cur |= diag[b];
        if (gs == nullptr && max_output >= 0 && count >= max_output) {
          stop = 1;
          break;
        }
      }
      kept_bits = kb;
    }
    __syncthreads();
    const uint64_t kb = kept_bits;
    if (kb != 0 && !stop) {
      const int64_t limit = seg_end != nullptr ? seg_end[row0 + rows - 1] : n;
      const int64_t wmax = imin(W, (limit - 1) / kBlock - rb + 1);
      for (int64_t w = 1 + t; w < wmax; w += blockDim.x) {
        uint64_t acc = removed[rb + w];
        for (uint64_t m = kb; m != 0; m &= m - 1) acc |= mask[(row0 + (__ffsll((long long)m) - 1)) * W + w];
        removed[rb + w] = acc;
      }
    }
    __syncthreads();
    if (stop) break;
  }
  if (t == 0) *num_kept = count;
}

// Shared-memory budget of the v2 greedy kernel's `removed` bitset (nblocks words); beyond it, global.
// 46 KiB, so that with the kernel's ~1 KiB of static shared memory it stays under the 48 KiB a launch
// gets without opting in: n <= 376,832 candidates.
constexpr int64_t kSharedRemovedWords = 5888;

// v2 greedy pass; same contract and results as nms_greedy_kernel. `removed_g` is used (and must be
// zeroed) only when the bitset does not fit in shared memory.
__global__ void __launch_bounds__(kGreedyThreads)
    nms_greedy_v2_kernel(const uint64_t* __restrict__ mask, int64_t n, int64_t W, const int64_t* __restrict__ seg_end,
                         const int64_t* __restrict__ gs, int64_t max_output, uint64_t* __restrict__ removed_g,
                         int64_t* __restrict__ keep_pos, int64_t* __restrict__ num_kept) {
  extern __shared__ uint64_t removed_s[];
  __shared__ uint64_t diag[kBlock];
  __shared__ int64_t grp[kBlock];
  __shared__ uint64_t kept_bits;
  __shared__ int stop;
  const int t = threadIdx.x;
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  const bool in_shared = nblocks <= kSharedRemovedWords;
  uint64_t* removed = in_shared ? removed_s : removed_g;
  if (in_shared)
    for (int64_t i = t; i < nblocks; i += blockDim.x) removed_s[i] = 0;
  int64_t count = 0, gcount = 0, group = 0;  // used by thread 0 only
  bool have_group = false;
  if (t == 0) stop = 0;
  __syncthreads();
  for (int64_t rb = 0; rb < nblocks; ++rb) {
    const int64_t row0 = rb * kBlock;
    const int rows = (int)imin(kBlock, n - row0);
    const uint64_t row_mask = rows == kBlock ? ~0ull : ((1ull << rows) - 1ull);
    // Every thread reads the same word, written before the last barrier: a uniform branch.
    const uint64_t cur0 = removed[rb];
    if ((cur0 & row_mask) == row_mask) continue;  // all suppressed: nothing kept, nothing to OR
    if (t < rows) {
      diag[t] = mask[(row0 + t) * W];
      if (gs != nullptr) grp[t] = gs[row0 + t];
    }
    __syncthreads();
    if (t == 0) {
      uint64_t kb = 0;
      uint64_t rest = row_mask & ~cur0;
      while (rest != 0) {
        const int b = __ffsll((long long)rest) - 1;
        rest &= rest - 1;
        if (gs != nullptr) {
          if (!have_group || grp[b] != group) {
            have_group = true;
            group = grp[b];
            gcount = 0;
          }
          if (max_output >= 0 && gcount >= max_output) continue;  // group full: neither kept nor suppressing
          ++gcount;
        }
        keep_pos[count++] = row0 + b;
        kb |= 1ull << b;
        rest &= ~diag[b];
        if (gs == nullptr && max_output >= 0 && count >= max_output) {
          stop = 1;
          break;
        }
      }
      kept_bits = kb;
    }
    __syncthreads();
    const uint64_t kb = kept_bits;
    if (kb != 0 && !stop) {
      const int64_t limit = seg_end != nullptr ? seg_end[row0 + rows - 1] : n;
      const int64_t wmax = imin(W, (limit - 1) / kBlock - rb + 1);
      for (int64_t w = 1 + t; w < wmax; w += blockDim.x) {
        uint64_t acc = removed[rb + w];
        uint64_t m = kb;
        while (m != 0) {  // four independent loads in flight per step
          uint64_t v[4] = {0, 0, 0, 0};
#pragma unroll
          for (int u = 0; u < 4; ++u) {
            if (m != 0) {
              v[u] = mask[(row0 + (__ffsll((long long)m) - 1)) * W + w];
              m &= m - 1;
            }
          }
          acc |= v[0] | v[1] | v[2] | v[3];
        }
        removed[rb + w] = acc;
      }
    }
    __syncthreads();
    if (stop) break;
  }
  if (t == 0) *num_kept = count;
}

// Sets bit 1 of *status when a coordinate is NaN/inf, bit 2 when a score is NaN (no sync).
template <typename T>
__global__ void nms_status_kernel(const T* __restrict__ boxes, const T* __restrict__ scores, int64_t n, int64_t d2,
                                  unsigned long long* __restrict__ status) {
  unsigned long long bad = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
    for (int64_t k = 0; k < d2; ++k) {
      const T v = boxes[i * d2 + k];
      if (!((v - v) == T(0))) bad |= 1ull;  // NaN or inf
    }
    if (scores[i] != scores[i]) bad |= 2ull;
  }
  if (bad != 0) atomicOr(status, bad);
}

struct Sorted {
  at::Tensor order1;  // rank in score order -> input index
  at::Tensor perm;    // candidate position -> input index
  at::Tensor rank;    // candidate position -> rank in score order (batched only)
  at::Tensor gs;      // candidate position -> group (batched only)
};

Sorted candidate_order(const at::Tensor& scores, const at::Tensor* groups) {
  Sorted s;
  // +0.0 maps -0.0 to +0.0, so the radix sort sees the two as the tie they are.
  s.order1 = std::get<1>(scores.add(0.0).sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  if (groups == nullptr) {
    s.perm = s.order1;
    return s;
  }
  auto sorted = groups->index_select(0, s.order1).sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  s.gs = std::get<0>(sorted).contiguous();
  s.rank = std::get<1>(sorted);
  s.perm = s.order1.index_select(0, s.rank);
  return s;
}

// Fills keep_pos (kept positions in candidate order, n entries) and info (see below).
// info: int64 (2,) zeros; the greedy kernel writes the kept count to info[0], and the status
// kernel (exact-size ops only) its bits to info[1].
template <typename T>
void run_kernels(const at::Tensor& boxes, const at::Tensor& scores, const Sorted& s, bool batched, bool padded,
                 double iou_threshold, int64_t limit, at::Tensor& keep_pos, at::Tensor& info) {
  const int64_t n = boxes.size(0), D2 = boxes.size(1);
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto lopt = boxes.options().dtype(at::kLong);
  if (!padded) {
    const int threads = 256;
    const int64_t blocks = imin((n + threads - 1) / threads, 1024);
    nms_status_kernel<T><<<blocks, threads, 0, stream>>>(
        boxes.data_ptr<T>(), scores.data_ptr<T>(), n, D2,
        reinterpret_cast<unsigned long long*>(info.data_ptr<int64_t>() + 1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const at::Tensor sb = boxes.index_select(0, s.perm).contiguous();
  at::Tensor seg_end;
  int64_t W = nblocks;
  if (batched) {
    seg_end = at::empty({n}, lopt);
    at::Tensor seg_len = padded ? at::Tensor() : at::empty({n}, lopt);
    const int threads = 256;
    const int64_t blocks = imin((n + threads - 1) / threads, 4096);
    segment_kernel<<<blocks, threads, 0, stream>>>(s.gs.data_ptr<int64_t>(), n, seg_end.data_ptr<int64_t>(),
                                                   padded ? nullptr : seg_len.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!padded) {  // band width from the largest group (one sync; the padded op keeps the full width)
      const int64_t maxseg = seg_len.max().item<int64_t>();
      W = imin(nblocks, (maxseg + kBlock - 2) / kBlock + 1);
    }
  }
  TORCH_CHECK(W <= 65535, "nms (CUDA): at most 4,194,240 boxes per group, got a group needing ", W,
              " mask words per row");
  const bool v2 = kernel_version() == 2;
  at::Tensor mask = at::empty({n * W}, lopt);
  // v2 keeps `removed` in shared memory when it fits (then no buffer is needed at all).
  at::Tensor removed = (v2 && nblocks <= kSharedRemovedWords) ? at::empty({1}, lopt) : at::zeros({nblocks}, lopt);
  // Padded outputs gather keep_pos beyond the kept count (masked afterwards): those entries must be
  // valid positions, so zeros there; the exact-size ops read only the first count entries.
  keep_pos = padded ? at::zeros({n}, lopt) : at::empty({n}, lopt);
  auto* mask_p = reinterpret_cast<uint64_t*>(mask.data_ptr<int64_t>());
  const int64_t* seg_p = batched ? seg_end.data_ptr<int64_t>() : nullptr;
  const T thr = threshold_as<T>(iou_threshold);
  const dim3 grid((unsigned)nblocks, (unsigned)W);
  if (D2 == 4)
    nms_mask_kernel<2, T><<<grid, kBlock, 0, stream>>>(sb.data_ptr<T>(), n, W, seg_p, thr, mask_p);
  else
    nms_mask_kernel<3, T><<<grid, kBlock, 0, stream>>>(sb.data_ptr<T>(), n, W, seg_p, thr, mask_p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (v2) {
    const size_t smem = nblocks <= kSharedRemovedWords ? static_cast<size_t>(nblocks) * sizeof(uint64_t) : 0;
    nms_greedy_v2_kernel<<<1, kGreedyThreads, smem, stream>>>(
        mask_p, n, W, seg_p, batched ? s.gs.data_ptr<int64_t>() : nullptr, limit,
        reinterpret_cast<uint64_t*>(removed.data_ptr<int64_t>()), keep_pos.data_ptr<int64_t>(),
        info.data_ptr<int64_t>());
  } else {
    nms_greedy_kernel<<<1, kGreedyThreads, 0, stream>>>(
        mask_p, n, W, seg_p, batched ? s.gs.data_ptr<int64_t>() : nullptr, limit,
        reinterpret_cast<uint64_t*>(removed.data_ptr<int64_t>()), keep_pos.data_ptr<int64_t>(),
        info.data_ptr<int64_t>());
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// (keep, num_kept): exact size when !padded, else (max_output,) padded with -1.
std::tuple<at::Tensor, at::Tensor> nms_cuda_core(const char* op, const at::Tensor& boxes_in,
                                                 const at::Tensor& scores_in, const at::Tensor* groups_in,
                                                 double iou_threshold, int64_t max_output, bool padded) {
  check_nms_args(op, boxes_in, scores_in, groups_in, iou_threshold, max_output, padded);
  TORCH_CHECK(boxes_in.is_cuda(), op, ": expected CUDA tensors, got ", boxes_in.device());
  c10::cuda::CUDAGuard guard(boxes_in.device());
  const auto lopt = boxes_in.options().dtype(at::kLong);
  const int64_t n = boxes_in.size(0);
  const int64_t limit = max_output < 0 ? n : std::min(n, max_output);
  if (n == 0 || limit == 0) {
    if (padded) return {at::full({max_output}, -1, lopt), at::zeros({}, lopt)};
    return {at::empty({0}, lopt), at::zeros({}, lopt)};
  }
  // half/bfloat16 are computed in float32 (exact conversions: same IoUs, same score order).
  const auto acc = boxes_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor boxes = boxes_in.to(acc).contiguous();
  const at::Tensor scores = scores_in.to(acc).contiguous();
  const bool batched = groups_in != nullptr;
  at::Tensor groups;
  if (batched) groups = groups_in->contiguous();
  const Sorted s = candidate_order(scores, batched ? &groups : nullptr);
  at::Tensor keep_pos;
  at::Tensor info = at::zeros({2}, lopt);  // (kept count, input status bits)
  AT_DISPATCH_FLOATING_TYPES(acc, "nms_cuda", [&] {
    run_kernels<scalar_t>(boxes, scores, s, batched, padded, iou_threshold, limit, keep_pos, info);
  });
  const at::Tensor num_kept = info.select(0, 0);
  if (!padded) {
    const at::Tensor host = info.to(at::kCPU);  // the one sync: the output size and the input status
    const int64_t k = host.data_ptr<int64_t>()[0], status = host.data_ptr<int64_t>()[1];
    TORCH_CHECK(!(status & 1), op, ": boxes contains NaN or infinite coordinates");
    TORCH_CHECK(!(status & 2), op, ": scores contains NaN");
    const at::Tensor pos = keep_pos.slice(0, 0, k);
    if (!batched) return {s.perm.index_select(0, pos), num_kept};
    at::Tensor ranks = std::get<0>(s.rank.index_select(0, pos).sort(false, 0, false)).slice(0, 0, limit);
    return {s.order1.index_select(0, ranks), num_kept.clamp_max(limit)};
  }
  at::Tensor idx;  // (limit,), a fresh tensor
  if (!batched) {
    const at::Tensor valid = at::arange(limit, lopt).lt(num_kept);
    idx = at::where(valid, s.perm.index_select(0, keep_pos.slice(0, 0, limit)), -1);
  } else {
    const at::Tensor valid = at::arange(n, lopt).lt(num_kept);
    // Kept ranks first (ascending = global score order), empty slots last.
    const at::Tensor ranks = at::where(valid, s.rank.index_select(0, keep_pos), std::numeric_limits<int64_t>::max());
    const at::Tensor top = std::get<0>(ranks.sort(false, 0, false)).slice(0, 0, limit);
    const at::Tensor ok = top.lt(n);
    idx = at::where(ok, s.order1.index_select(0, at::where(ok, top, 0)), -1);
  }
  if (limit == max_output) return {idx, num_kept.clamp_max(limit)};
  at::Tensor out = at::empty({max_output}, lopt);
  out.slice(0, limit).fill_(-1);
  out.slice(0, 0, limit).copy_(idx);
  return {out, num_kept.clamp_max(limit)};
}

at::Tensor nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, double iou_threshold, int64_t max_output) {
  return std::get<0>(nms_cuda_core("nms", boxes, scores, nullptr, iou_threshold, max_output, false));
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& groups,
                            double iou_threshold, int64_t max_output) {
  return std::get<0>(nms_cuda_core("batched_nms", boxes, scores, &groups, iou_threshold, max_output, false));
}

std::tuple<at::Tensor, at::Tensor> nms_padded_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                                                   double iou_threshold, int64_t max_output) {
  return nms_cuda_core("nms_padded", boxes, scores, nullptr, iou_threshold, max_output, true);
}

std::tuple<at::Tensor, at::Tensor> batched_nms_padded_cuda(const at::Tensor& boxes, const at::Tensor& scores,
                                                           const at::Tensor& groups, double iou_threshold,
                                                           int64_t max_output) {
  return nms_cuda_core("batched_nms_padded", boxes, scores, &groups, iou_threshold, max_output, true);
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_unet, CUDA, m) {
  m.impl("nms", &nms_cuda);
  m.impl("batched_nms", &batched_nms_cuda);
  m.impl("nms_padded", &nms_padded_cuda);
  m.impl("batched_nms_padded", &batched_nms_padded_cuda);
}

}  // namespace retina_unet
