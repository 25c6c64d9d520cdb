#pragma once
/// Internal to src/tune: what tune.cpp (the search loop and refit) needs
/// from trials.cpp (trial store, fingerprints, tables). Not installed.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cxr/common/text.h"
#include "cxr/data/dataset.h"
#include "cxr/train/run.h"
#include "cxr/tune/tune.h"

namespace cxr::tune::detail {

/// Fixed-point text with `p` decimals; "nan" for NaN, as trials.csv and
/// results.md have always written an undefined metric.
inline std::string fmt(double v, int p = 4) {
  return fixed(v, p, "nan");
}

/// Trials stored one JSON line each; a torn last line (crash) is skipped.
std::vector<TrialResult> read_store(const std::filesystem::path& p);
void append_store(const std::filesystem::path& p, const TrialResult& r);

/// A trial's fingerprint: every setting that shapes it, data included.
nlohmann::json trial_settings(const train::RunOptions& o,
                              const data::Dataset& ds);

/// Names the first setting where `stored` (an earlier search's trial) and
/// `now` differ, as a flag with its value where a flag sets it.
std::string first_difference(const nlohmann::json& stored,
                             const nlohmann::json& now);

/// Writes trials.csv (in trial order) and results.md (ranked by `metric`).
void write_tables(const std::filesystem::path& dir,
                  std::vector<TrialResult> results,
                  const std::string& metric,
                  const std::string& mode);

}  // namespace cxr::tune::detail
