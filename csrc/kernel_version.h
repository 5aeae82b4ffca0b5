// Which generation of the CUDA kernels the ops launch: 1 (default, the kernels that passed the
// CUDA tests and compute-sanitizer on a GPU) or 2 (the rewritten kernels, opt-in until they have).
// Set from Python (retina_unet.ops.set_kernel_version / RETINA_UNET_KERNELS) through the op
// `retina_unet::_set_kernel_version`; read on the host at each launch (a relaxed atomic load).
#pragma once

#include <cstdint>

namespace retina_unet {

int64_t kernel_version();

}  // namespace retina_unet
