/// Image decoding: any bytes into cxr::data::decode_gray. A DataError is the
/// expected answer to a bad file; anything else (crash, other exception,
/// leak, UB) is a finding, and so is a decoded image that breaks the
/// contract ([H, W] float32 in [0, 1] matching ImageInfo).
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "cxr/common/error.h"
#include "cxr/data/image_io.h"
#include "fuzz_torch.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cxr::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<unsigned char> bytes(data, data + size);
  // Smaller than the defaults so a tiny file claiming a large picture stays
  // fast; the limit checks themselves are what matters.
  cxr::data::DecodeLimits limits;
  limits.max_side = 4096;
  limits.max_pixels = 4LL * 1024 * 1024;
  try {
    const auto img = cxr::data::decode_gray(bytes, "fuzz", limits);
    const auto& p = img.pixels;
    const bool ok =
        p.defined() && p.dim() == 2 && p.scalar_type() == torch::kFloat32 &&
        p.size(0) == img.info.height && p.size(1) == img.info.width &&
        img.info.width >= 1 && img.info.height >= 1 &&
        img.info.width <= limits.max_side &&
        img.info.height <= limits.max_side && p.isfinite().all().item<bool>() &&
        p.min().item<float>() >= 0.0f && p.max().item<float>() <= 1.0f &&
        img.info.chroma >= 0.0 && img.info.chroma <= 1.0;
    if (!ok) std::abort();  // a decoded image outside the contract
  } catch (const cxr::Error&) {
    // The documented answer to a bad file.
  }
  return 0;
}
