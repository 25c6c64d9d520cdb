#pragma once
/// For the libFuzzer targets that run torch: one CPU thread (they measure
/// the parsers, not torch's thread pool).
#include <torch/torch.h>

#include "fuzz_common.h"

namespace cxr::fuzz {

inline void init_torch() {
  torch::set_num_threads(1);
  torch::set_num_interop_threads(1);
}

}  // namespace cxr::fuzz
