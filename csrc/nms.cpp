// Schemas of the NMS op family. One schema serves 2D (N, 4) and 3D (N, 6) boxes.
//
// Semantics (docs/conventions.md, "NMS"): candidates in order of score descending, ties by index
// ascending; a box is kept iff no kept box has IoU > iou_threshold with it; degenerate boxes are
// always kept and never suppress. Results are int64 indices into the input, in that order.
// max_output < 0 means "no limit".
#include <torch/library.h>

namespace retina_unet {

TORCH_LIBRARY_FRAGMENT(retina_unet, m) {
  m.def("nms(Tensor boxes, Tensor scores, float iou_threshold, int max_output=-1) -> Tensor");
  // groups (N,) int64: boxes of different groups never suppress each other. Output sorted by
  // score over all groups; max_output bounds the total.
  m.def(
      "batched_nms(Tensor boxes, Tensor scores, Tensor groups, float iou_threshold, int max_output=-1) "
      "-> Tensor");
  // Sync-free, fixed-shape variants (CUDA graphs, export): keep (max_output,) int64 padded with -1,
  // and num_kept, a 0-d int64 tensor.
  m.def("nms_padded(Tensor boxes, Tensor scores, float iou_threshold, int max_output) -> (Tensor, Tensor)");
  m.def(
      "batched_nms_padded(Tensor boxes, Tensor scores, Tensor groups, float iou_threshold, int max_output) "
      "-> (Tensor, Tensor)");
}

}  // namespace retina_unet
