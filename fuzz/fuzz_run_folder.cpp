/// Run-folder loading: config.json, model.safetensors and ood.safetensors
/// through read_run_config, load_model and OodDetector::load, as every
/// scoring command does (what a run folder written by this cxr holds; the
/// model.pt and ood.pt of older folders are read by LibTorch and are trusted
/// input, docs/reliability.md). Input layout: 4 bytes little-endian length
/// L1, L1 bytes of config.json, 4 bytes length L2, L2 bytes of
/// model.safetensors, the rest is ood.safetensors (lengths are clipped to
/// what is there; a missing piece is an empty file). A ModelError is the
/// expected answer.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "cxr/common/error.h"
#include "cxr/infer/ood.h"
#include "cxr/infer/run_config.h"
#include "cxr/models/weights_file.h"
#include "fuzz_torch.h"

namespace {

/// The next length-prefixed piece of the input (clipped to what is left).
std::pair<const uint8_t*, size_t> piece(const uint8_t*& data, size_t& size) {
  if (size < 4) {
    const auto all = std::make_pair(data, size);
    data += size;
    size = 0;
    return all;
  }
  const uint32_t n = uint32_t(data[0]) | uint32_t(data[1]) << 8 |
                     uint32_t(data[2]) << 16 | uint32_t(data[3]) << 24;
  const size_t len = std::min<size_t>(n, size - 4);
  const auto out = std::make_pair(data + 4, len);
  data += 4 + len;
  size -= 4 + len;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cxr::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto config = piece(data, size);
  const auto weights = piece(data, size);
  const std::string dir = cxr::fuzz::scratch("run");
  ::mkdir(dir.c_str(), 0700);
  cxr::fuzz::write_file(dir + "/config.json", config.first, config.second);
  cxr::fuzz::write_file(dir + "/" + cxr::models::kWeightsFile, weights.first,
                        weights.second);
  const std::string ood = dir + "/" + cxr::infer::kOodFile;
  cxr::fuzz::write_file(ood, data, size);
  try {
    const auto config = cxr::infer::read_run_config(dir);
    // Building a model is the cost of a config, not of the parser: only
    // baseline networks of up to ~1 M weights are built, so the fuzzer keeps
    // its speed on the weights file (transfer models are the same loader
    // with more tensors).
    int64_t weights = 0;
    int64_t in = 1;
    for (int f : config.model.filters) {
      weights += in * std::max(f, 0) * 9;
      in = std::max(f, 0);
    }
    if (config.model.arch == "baseline" && weights <= (1 << 20)) {
      cxr::infer::load_model(dir, config.model, torch::kCPU);
    }
  } catch (const cxr::Error&) {
  }
  try {
    cxr::infer::OodDetector::load(ood);
  } catch (const cxr::Error&) {
  }
  return 0;
}
