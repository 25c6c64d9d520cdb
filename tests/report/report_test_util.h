#pragma once
// Helpers of the report suites (test_report*.cpp): study folders written
// from JSON, and where a test's HTML goes.
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace cxr::testing {

/// Writes `j` (indented) to `p`, creating its folders.
inline void write_json(const std::filesystem::path& p,
                       const nlohmann::json& j) {
  write_bytes(p, j.dump(2));
}

/// Where a test writes its HTML: CXR_TEST_REPORT_DIR when set (kept, to
/// look at or render), else the test's own temp folder.
inline std::filesystem::path report_out_dir(const TempDir& tmp) {
  if (const char* keep = std::getenv("CXR_TEST_REPORT_DIR")) {
    std::filesystem::create_directories(keep);
    return keep;
  }
  return tmp.path();
}

}  // namespace cxr::testing
