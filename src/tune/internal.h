#pragma once
/// Internal to src/tune: what tune.cpp (the search loop and refit) needs
/// from trials.cpp (trial store, fingerprints, tables). Not installed.
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cxr/common/text.h"
#include "cxr/data/dataset.h"
#include "cxr/dist/dist.h"
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

/// Grid or random trials, with those that differ only in a momentum their
/// optimizer ignores made one (the first), and a note saying so (`note`).
std::vector<Params> listed_trials(const TuneOptions& o, bool note);

/// Where a new trial stands: `k` of `total` (0-based) for the progress
/// lines, its folder OUT/trials/trial-<index>, and the time the search
/// still needs (NaN = unknown).
struct TrialSlot {
  int k;
  int total;
  int index;
  double eta_seconds;
};

/// Trains one new trial (key: trial_key(p)) into its slot's folder.
TrialResult train_trial(const TuneOptions& o,
                        const data::Dataset& ds,
                        const Params& p,
                        const TrialSlot& slot);
/// The "  -> val loss ..." line after a trial.
void print_trial_line(const TrialResult& r);

/// What a search visited, for the tables and best.json.
struct SearchOutcome {
  std::vector<TrialResult> unique;  ///< distinct trials, in trial order
  int ran_now = 0;
  bool budget_hit = false;
  double minutes = 0;
};

/// Distributed grid/random search (distributed.cpp), rank 0's side: it
/// plans (the stored trials skipped), claims and trains trials like every
/// rank, collects every rank's results into the store file as they arrive,
/// and returns once all claimed trials are in.
SearchOutcome tune_main(const TuneOptions& o,
                        const data::Dataset& ds,
                        const std::vector<TrialResult>& done,
                        dist::Context& job);
/// The other ranks: load the data, take the plan, claim and train trials,
/// hand each result to rank 0 through the store.
void tune_worker(const TuneOptions& o, const data::Dataset* preloaded);

}  // namespace cxr::tune::detail
