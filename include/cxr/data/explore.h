#pragma once
/// `cxr explore`: a readable summary of a dataset before any training is
/// trusted (counts, sizes, pixel statistics, histograms, samples, leakage).
#include <nlohmann/json.hpp>
#include <string>

#include "cxr/data/dataset.h"
#include "cxr/data/stats.h"

namespace cxr::data {

struct ExploreOptions {
  /// Output folder for summary.json and pictures.
  std::string out_dir = "explore";
  /// Sample images per class in samples.png.
  int samples_per_class = 8;
  /// Histogram bins over [0, 1].
  int histogram_bins = 64;
  DuplicateOptions duplicates;
};

/// Computes the summary, writes summary.json, histograms.png, samples.png and
/// duplicates.csv into options.out_dir, and returns the summary.
nlohmann::json explore(const Dataset& ds, const ExploreOptions& options);

/// The summary as a few aligned, human-readable lines.
std::string format_summary(const nlohmann::json& summary);

}  // namespace cxr::data
