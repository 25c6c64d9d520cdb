/// Run-folder loading: config.json + model.pt through read_run_config and
/// load_model, as every scoring command does. Input layout: 4 bytes
/// little-endian length L of config.json, L bytes of it, the rest is
/// model.pt (a missing or short header means everything is config.json and
/// model.pt is empty). A ModelError is the expected answer.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "cxr/common/error.h"
#include "cxr/infer/run_config.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cxr::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  size_t json_size = size;
  size_t offset = 0;
  if (size >= 4) {
    const uint32_t n = uint32_t(data[0]) | uint32_t(data[1]) << 8 |
                       uint32_t(data[2]) << 16 | uint32_t(data[3]) << 24;
    offset = 4;
    json_size = std::min<size_t>(n, size - 4);
  }
  const std::string dir = cxr::fuzz::scratch("run");
  ::mkdir(dir.c_str(), 0700);
  cxr::fuzz::write_file(dir + "/config.json", data + offset, json_size);
  cxr::fuzz::write_file(dir + "/model.pt", data + offset + json_size,
                        size - offset - json_size);
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
  return 0;
}
