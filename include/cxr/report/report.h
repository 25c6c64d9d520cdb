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

/// An evaluated model in the report with its headline metrics (NaN where
/// metrics.json has none).
struct ReportModel {
  std::string name;
  std::string run;  ///< the run folder
  double accuracy = 0, recall = 0, specificity = 0, auc = 0;
};

/// What a written report holds, for the CLI's line and for checks.
struct ReportSummary {
  std::string path;                   ///< the HTML file
  std::vector<std::string> sections;  ///< section ids in page order
  std::vector<ReportModel> models;    ///< models evaluated on the split
};

/// Writes the report and returns what it contains.
ReportSummary write_report(const ReportOptions& options);

/// The reference study's published test accuracies and the plain-PyTorch
/// bar on cxr-seed (docs/reference-study.md), shown beside ours.
nlohmann::json published_numbers();

}  // namespace cxr::report
