/// The tune search-space parsers: `--grid` tokens (parse_space, one token
/// per line of the input) and the --space JSON file (read_space_file), then
/// grid_trials / random_trials on what parsed. A ConfigError is the expected
/// answer; anything else is a finding.
#include <cstdint>
#include <string>
#include <vector>

#include "cxr/common/error.h"
#include "cxr/tune/tune.h"
#include "fuzz_torch.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  cxr::fuzz::init_torch();
  return 0;
}

namespace {

void exercise(const cxr::tune::SearchSpace& space) {
  // A grid of many values per parameter multiplies; keep the product small
  // so the target measures parsing, not memory.
  size_t product = 1;
  bool has_range = false;
  for (const auto& p : space.params) {
    product *= std::max<size_t>(1, p.values.size());
    if (product > 4096) return;
    has_range = has_range || p.is_range;
  }
  try {
    if (!has_range) cxr::tune::grid_trials(space);
    cxr::tune::random_trials(space, 4, 1);
  } catch (const cxr::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  // As --grid tokens.
  std::vector<std::string> tokens;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t nl = text.find('\n', start);
    const size_t end = nl == std::string::npos ? text.size() : nl;
    tokens.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  try {
    exercise(cxr::tune::parse_space(tokens));
  } catch (const cxr::Error&) {
  }
  // As a --space file.
  const std::string path = cxr::fuzz::scratch("space.json");
  cxr::fuzz::write_file(path, data, size);
  try {
    exercise(cxr::tune::read_space_file(path));
  } catch (const cxr::Error&) {
  }
  return 0;
}
