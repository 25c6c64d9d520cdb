// The fuzzers' findings as regression tests (docs/reliability.md, Fuzzing):
// each input under fuzz/regressions/fuzz_run_folder/ is split into
// config.json and model.pt as the fuzz target does and loaded as a run; a
// bad run folder must be a ModelError, never another exception. The search
// space's int overflow is replayed inline.
#include <cstdint>
#include <fstream>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/infer/run_config.h"
#include "cxr/tune/tune.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;

using cxr::testing::read_text;

TEST(FuzzFindings, RunFolderInputsAreModelErrors) {
  const fs::path dir =
      fs::path(CXR_SOURCE_DIR) / "fuzz" / "regressions" / "fuzz_run_folder";
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int replayed = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string data = read_text(e.path());
    size_t json_size = data.size(), offset = 0;
    if (data.size() >= 4) {
      const auto* b = reinterpret_cast<const unsigned char*>(data.data());
      const uint32_t n = uint32_t(b[0]) | uint32_t(b[1]) << 8 |
                         uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
      offset = 4;
      json_size = std::min<size_t>(n, data.size() - 4);
    }
    cxr::testing::TempDir run;
    cxr::testing::write_bytes(run / "config.json",
                              data.substr(offset, json_size));
    cxr::testing::write_bytes(run / "model.pt",
                              data.substr(offset + json_size));
    try {
      const auto config = cxr::infer::read_run_config(run.path().string());
      cxr::infer::load_model(run.path().string(), config.model, torch::kCPU);
      ADD_FAILURE() << e.path() << " loaded";
    } catch (const cxr::ModelError& err) {
      const std::string m = err.what();
      EXPECT_NE(m.find(run.path().string()), std::string::npos)
          << e.path() << ": " << m;
    } catch (const std::exception& err) {
      ADD_FAILURE() << e.path() << ": not a ModelError: " << err.what();
    }
    ++replayed;
  }
  EXPECT_GE(replayed, 3);
}

TEST(FuzzFindings, SearchSpaceIntegerBeyondIntIsAConfigError) {
  // Casting 8.2e11 to int was undefined behaviour (UBSan).
  EXPECT_THROW(cxr::tune::parse_space({"filters=822222222222,32"}),
               cxr::ConfigError);
  EXPECT_THROW(cxr::tune::parse_space({"filters=8-822222222222"}),
               cxr::ConfigError);
  EXPECT_NO_THROW(cxr::tune::parse_space({"filters=8,32"}));
}

TEST(FuzzFindings, SearchSpaceFiltersWhoseBlocksOverflowAreAConfigError) {
  // One value B means the blocks B, 2B, 4B, 4B: 4 * 999999998 overflowed
  // int (UBSan, fuzz_tune_space, fourth campaign). Now each block must be a
  // channel count the baseline takes (1..4096), named in the message.
  const auto e = cxr::testing::error_of<cxr::ConfigError>(
      [] { cxr::tune::parse_space({"filters=999999998"}); });
  EXPECT_NE(e.find("filters=999999998: each conv block has 1 to 4096 "
                   "filters (one value B means the blocks B, 2B, 4B, 4B: B "
                   "is 1 to 1024)"),
            std::string::npos)
      << e;
  EXPECT_THROW(cxr::tune::parse_space({"filters=1025"}), cxr::ConfigError);
  EXPECT_THROW(cxr::tune::parse_space({"filters=8-5000"}), cxr::ConfigError);
  EXPECT_NO_THROW(cxr::tune::parse_space({"filters=1024,8-4096"}));
}

}  // namespace
