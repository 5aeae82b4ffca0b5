// Autograd for RoIAlign in C++ (dispatch key Autograd, so CPU and CUDA alike): a call from Python
// costs one dispatcher hop instead of the Python `register_autograd` machinery. The fake kernels
// for torch.compile stay in Python (retina_unet/ops/roi_align.py, `register_fake`).
//
// The backward op is linear in `grad`, and its own gradient is the forward op, so double backward
// (gradgradcheck) works: each function's backward applies the other function.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <vector>

namespace retina_unet {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

at::Tensor forward_op(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                      c10::IntArrayRef output_size, int64_t sampling_ratio, bool aligned) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("retina_unet::roi_align", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::IntArrayRef, int64_t, bool)>();
  return op.call(input, rois, spatial_scale, output_size, sampling_ratio, aligned);
}

at::Tensor backward_op(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                       c10::IntArrayRef output_size, int64_t sampling_ratio, bool aligned,
                       c10::SymIntArrayRef input_shape) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("retina_unet::_roi_align_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, c10::IntArrayRef, int64_t, bool,
                                         c10::SymIntArrayRef)>();
  return op.call(grad, rois, spatial_scale, output_size, sampling_ratio, aligned, input_shape);
}

void save_args(AutogradContext* ctx, const at::Tensor& rois, double spatial_scale, c10::IntArrayRef output_size,
               int64_t sampling_ratio, bool aligned) {
  ctx->saved_data["spatial_scale"] = spatial_scale;
  ctx->saved_data["output_size"] = output_size.vec();
  ctx->saved_data["sampling_ratio"] = sampling_ratio;
  ctx->saved_data["aligned"] = aligned;
  ctx->save_for_backward({rois});
}

class RoIAlignBackwardFunction;

class RoIAlignFunction : public torch::autograd::Function<RoIAlignFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& input, const Variable& rois,
                               double spatial_scale, c10::IntArrayRef output_size, int64_t sampling_ratio,
                               bool aligned) {
    save_args(ctx, rois, spatial_scale, output_size, sampling_ratio, aligned);
    ctx->saved_data["input_shape"] = input.sym_sizes();
    at::AutoDispatchBelowADInplaceOrView guard;
    return {forward_op(input, rois, spatial_scale, output_size, sampling_ratio, aligned)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_output);
};

class RoIAlignBackwardFunction : public torch::autograd::Function<RoIAlignBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Variable& grad, const Variable& rois,
                               double spatial_scale, c10::IntArrayRef output_size, int64_t sampling_ratio,
                               bool aligned, c10::SymIntArrayRef input_shape) {
    save_args(ctx, rois, spatial_scale, output_size, sampling_ratio, aligned);
    at::AutoDispatchBelowADInplaceOrView guard;
    return {backward_op(grad, rois, spatial_scale, output_size, sampling_ratio, aligned, input_shape)};
  }

  // d(backward)/d(grad) applied to gg is the forward of gg (the backward is linear in grad).
  static variable_list backward(AutogradContext* ctx, variable_list grad_output) {
    const auto rois = ctx->get_saved_variables()[0];
    const auto output_size = ctx->saved_data["output_size"].toIntVector();
    auto gg = RoIAlignFunction::apply(grad_output[0], rois, ctx->saved_data["spatial_scale"].toDouble(),
                                      output_size, ctx->saved_data["sampling_ratio"].toInt(),
                                      ctx->saved_data["aligned"].toBool());
    return {gg[0], Variable(), Variable(), Variable(), Variable(), Variable(), Variable()};
  }
};

variable_list RoIAlignFunction::backward(AutogradContext* ctx, variable_list grad_output) {
  const auto rois = ctx->get_saved_variables()[0];
  const auto output_size = ctx->saved_data["output_size"].toIntVector();
  const auto input_shape = ctx->saved_data["input_shape"].toSymIntVector();
  auto gi = RoIAlignBackwardFunction::apply(grad_output[0], rois, ctx->saved_data["spatial_scale"].toDouble(),
                                            output_size, ctx->saved_data["sampling_ratio"].toInt(),
                                            ctx->saved_data["aligned"].toBool(), input_shape);
  return {gi[0], Variable(), Variable(), Variable(), Variable(), Variable()};
}

at::Tensor roi_align_autograd(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                              c10::IntArrayRef output_size, int64_t sampling_ratio, bool aligned) {
  return RoIAlignFunction::apply(input, rois, spatial_scale, output_size, sampling_ratio, aligned)[0];
}

at::Tensor roi_align_backward_autograd(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                       c10::IntArrayRef output_size, int64_t sampling_ratio, bool aligned,
                                       c10::SymIntArrayRef input_shape) {
  return RoIAlignBackwardFunction::apply(grad, rois, spatial_scale, output_size, sampling_ratio, aligned,
                                         input_shape)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(retina_unet, Autograd, m) {
  m.impl("roi_align", TORCH_FN(roi_align_autograd));
  m.impl("_roi_align_backward", TORCH_FN(roi_align_backward_autograd));
}

}  // namespace retina_unet
