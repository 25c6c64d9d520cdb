#pragma once
/// `cxr report`: one self-contained HTML file (images embedded as data URIs)
/// built only from files other stages wrote (study.json, explore/, tune/,
/// run folders with eval-test/ and explain folders), so a report can be
/// rebuilt without re-running anything.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace cxr::report {

struct ReportOptions {
  /// A study folder (with study.json) or one or more run folders.
  std::vector<std::string> inputs;
  /// Output HTML file.
  std::string out_path = "report.html";
  /// Split whose evaluation is reported.
  std::string split = "test";
};

/// Writes the report; returns a JSON summary of what it contains
/// (sections, models and their headline metrics) for checks and logs.
nlohmann::json write_report(const ReportOptions& options);

/// The reference study's published test accuracies and the plain-PyTorch
/// bar on cxr-seed (docs/reference-study.md), shown beside ours.
nlohmann::json published_numbers();

}  // namespace cxr::report
