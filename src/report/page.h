#pragma once
// Internal to src/report: what a report is about (the study and its models'
// files) and the page being written, shared by the section writers in
// report.cpp, summary.cpp and trust.cpp.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cxr/report/report.h"

namespace cxr::report::detail {

struct Model {
  std::string name;
  std::filesystem::path run;
  nlohmann::json config, metrics;  ///< null when the file is missing
};

/// The study (empty for run folders) and its models.
struct Inputs {
  std::filesystem::path study;
  nlohmann::json sj;  ///< study.json, null for run folders
  std::vector<Model> models;
};

/// The page being written: its body, the sections for the table of
/// contents, and the summary of what it holds.
struct Page {
  Page(const ReportOptions& options, const Inputs& inputs)
      : o(options), in(inputs) {}

  const ReportOptions& o;
  const Inputs& in;
  std::ostringstream h;  ///< the body after the table of contents
  std::vector<std::pair<std::string, std::string>> toc;  ///< (id, title)
  ReportSummary summary;

  /// Starts a section: a heading with an anchor and a TOC entry. Returns the
  /// anchor, `id` made unique ("tuning", "tuning-2") when it repeats.
  std::string section(const std::string& id, const std::string& title);
  /// The same, followed by the section's introduction: one paragraph of
  /// HTML (what the section shows and how to read it).
  std::string section(const std::string& id,
                      const std::string& title,
                      const std::string& intro_html);
};

/// One explain folder's trust checks (explain-examples or
/// explain-misclassified) of a model.
struct TrustSet {
  std::string kind;        ///< the folder name
  std::string label;       ///< "examples", "misclassified test images"
  nlohmann::json summary;  ///< its summary.json
  /// summary.json's "trust" object (null when it has none).
  const nlohmann::json& trust() const;
};

/// The model's explain folders that hold trust checks, examples first.
std::vector<TrustSet> trust_sets(const Model& m, const std::string& split);

/// A model that has trust checks and its sets.
struct ModelTrust {
  const Model* model;
  std::vector<TrustSet> sets;
};

/// The report's models that have trust checks, in report order (the trust
/// section and the summary walk the same list).
std::vector<ModelTrust> models_with_trust(const Page& p);

/// The index of the deletion fraction closest to `target`, or -1 when the
/// deletion check has no usable numbers.
int deletion_index(const nlohmann::json& deletion, double target = 0.2);

/// `v` (a fraction) as a percentage without needless decimals: "20 %".
std::string percent_of(double v);

/// "What this study shows": the opening section (summary.cpp).
void write_summary(Page& p);

/// Trust checks of the Grad-CAM maps as figures and tables (trust.cpp).
void write_trust(Page& p);

/// The out-of-distribution warning: flag rates per OOD set (ood.cpp).
void write_ood(Page& p);

}  // namespace cxr::report::detail
