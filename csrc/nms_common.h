// Helpers shared by the CPU and CUDA NMS kernels (private to the nms op family).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace retina_unet {
namespace nms_detail {

// The threshold in the accumulation type such that, for every acc_t value x,
// `x > threshold_as<acc_t>(t)` equals the exact real comparison `x > t`: round t *down*.
// (Rounding to nearest could round 0.49999999 up to 0.5f and keep a box whose IoU is exactly 0.5.)
template <typename acc_t>
inline acc_t threshold_as(double t) {
  acc_t r = static_cast<acc_t>(t);
  if (static_cast<double>(r) > t) r = std::nextafter(r, -std::numeric_limits<acc_t>::infinity());
  return r;
}

}  // namespace nms_detail
}  // namespace retina_unet

#include <ATen/core/Tensor.h>

namespace retina_unet {
namespace nms_detail {

// Second line of defence behind the Python wrappers (retina_unet/ops/nms.py), which check the
// same things with friendlier messages. `groups` may be null (plain nms); max_output < 0 = no limit.
inline void check_nms_args(const char* op, const at::Tensor& boxes, const at::Tensor& scores,
                           const at::Tensor* groups, double iou_threshold, int64_t max_output, bool padded) {
  TORCH_CHECK(boxes.dim() == 2 && (boxes.size(1) == 4 || boxes.size(1) == 6), op,
              ": boxes must have shape (N, 4) or (N, 6), got ", boxes.sizes());
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), op, ": boxes must be a floating tensor, got ",
              boxes.scalar_type());
  TORCH_CHECK(scores.dim() == 1 && scores.size(0) == boxes.size(0), op, ": scores must have shape (",
              boxes.size(0), ",) like boxes, got ", scores.sizes());
  TORCH_CHECK(scores.scalar_type() == boxes.scalar_type(), op, ": scores must have the dtype of boxes (",
              boxes.scalar_type(), "), got ", scores.scalar_type());
  TORCH_CHECK(scores.device() == boxes.device(), op, ": scores must be on the device of boxes (",
              boxes.device(), "), got ", scores.device());
  TORCH_CHECK(iou_threshold >= 0.0 && iou_threshold <= 1.0, op, ": iou_threshold must be in [0, 1], got ",
              iou_threshold);
  TORCH_CHECK(!padded || max_output >= 0, op, ": max_output must be >= 0, got ", max_output);
  if (groups != nullptr) {
    TORCH_CHECK(groups->dim() == 1 && groups->size(0) == boxes.size(0), op, ": groups must have shape (",
                boxes.size(0), ",) like boxes, got ", groups->sizes());
    TORCH_CHECK(groups->scalar_type() == at::kLong, op, ": groups must be int64, got ", groups->scalar_type());
    TORCH_CHECK(groups->device() == boxes.device(), op, ": groups must be on the device of boxes (",
                boxes.device(), "), got ", groups->device());
  }
}

}  // namespace nms_detail
}  // namespace retina_unet
