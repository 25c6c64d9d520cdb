/// The search loop (grid, random, sequential; budget; resume from the trial
/// store) and the refit of the best configuration. Search spaces live in
/// space.cpp, the trial store and tables in trials.cpp.
#include "cxr/tune/tune.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <set>
#include <streambuf>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/common/progress.h"
#include "cxr/dist/dist.h"
#include "cxr/evaluate/evaluate.h"
#include "cxr/train/run_dir.h"
#include "internal.h"

namespace fs = std::filesystem;

namespace cxr::tune {
namespace {

/// While it lives, every line written to std::cerr starts with `prefix`:
/// in a log, a trial's epoch lines say which trial they belong to.
class CerrLinePrefix : public std::streambuf {
 public:
  explicit CerrLinePrefix(std::string prefix)
      : prefix_(std::move(prefix)), target_(std::cerr.rdbuf(this)) {}
  ~CerrLinePrefix() override { std::cerr.rdbuf(target_); }
  CerrLinePrefix(const CerrLinePrefix&) = delete;
  CerrLinePrefix& operator=(const CerrLinePrefix&) = delete;

 protected:
  int overflow(int c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    if (at_line_start_) {
      target_->sputn(prefix_.data(),
                     static_cast<std::streamsize>(prefix_.size()));
      at_line_start_ = false;
    }
    at_line_start_ = c == '\n';
    return target_->sputc(static_cast<char>(c));
  }
  int sync() override { return target_->pubsync(); }

 private:
  std::string prefix_;
  std::streambuf* target_;
  bool at_line_start_ = true;
};

}  // namespace

using detail::append_store;
using detail::first_difference;
using detail::fmt;
using detail::read_store;
using detail::trial_settings;
using detail::write_tables;

train::RunOptions refit_options(const train::RunOptions& base,
                                const TrialResult& best) {
  train::RunOptions ro = base;
  apply_params(best.params, ro);
  ro.train.train_on = "train+val";
  ro.train.patience = 0;
  // The refit has no validation left: it carries over the best trial's
  // threshold (its rule's, or 0.5) and its calibration temperature, fitted
  // on that trial's validation predictions at its best epoch. So the refit
  // copies that model as closely as it can: the trial's schedule, unchanged
  // (a cosine over the same epochs, so the same learning rate each epoch;
  // shortening it to the best epoch would anneal faster and give another
  // model), stopped after the best epoch.
  const bool transfer = models::is_transfer(ro.model.arch);
  if (transfer && best.frozen_epochs > 0 &&
      best.frozen_epochs < ro.train.epochs) {
    // Early stopping ended the trial's frozen phase there.
    ro.train.epochs = best.frozen_epochs;
  }
  const int total =
      ro.train.epochs + (transfer ? ro.train.fine_tune_epochs : 0);
  ro.stop_after_epoch =
      best.best_epoch > 0 && best.best_epoch < total ? best.best_epoch : 0;
  ro.target_sensitivity.reset();
  ro.balanced_threshold = false;
  ro.threshold_from = best.run_dir;
  ro.resume = false;
  return ro;
}

namespace {
TuneResult tune_locked(const TuneOptions& o, const data::Dataset* preloaded);
TuneResult finish(const TuneOptions& o,
                  const data::Dataset& ds,
                  const detail::SearchOutcome& search);
}  // namespace

TuneResult run_tune(const TuneOptions& o, const data::Dataset* preloaded) {
  if (o.metric != "val_loss" && o.metric != "val_accuracy" &&
      o.metric != "val_auc" && o.metric != "val_recall") {
    throw ConfigError("--metric " + o.metric +
                      ": use val_loss, val_accuracy, val_auc or val_recall");
  }
  if (o.mode != "grid" && o.mode != "random" && o.mode != "sequential") {
    throw ConfigError("--mode " + o.mode + ": use grid, random or sequential");
  }
  if (o.budget_minutes && !(*o.budget_minutes > 0)) {
    throw ConfigError("--budget-minutes " + fmt(*o.budget_minutes, 1) +
                      ": give a number of minutes > 0, or leave it out for "
                      "no limit");
  }
  if (o.base.train.train_on != "train") {
    throw ConfigError("tuning selects on validation: --train-on must be train");
  }
  check_space_applies(o.space, o.base.train.optimizer);
  if (dist::world().distributed()) {
    if (o.mode == "sequential") {
      throw ConfigError(
          "--mode sequential runs one trial after another (each parameter "
          "at the best value so far), so it cannot spread over ranks: use "
          "--mode grid or random with --nproc, or run it in one process");
    }
    // The other ranks claim and train trials; rank 0 alone holds the lock
    // and writes the tune folder's files (docs/distributed.md).
    if (!dist::world().is_main()) {
      detail::tune_worker(o, preloaded);
      TuneResult none;
      none.out_dir = o.out_dir;
      return none;
    }
  }
  const fs::path out(o.out_dir);
  const bool existed = fs::exists(out);
  // One writer per tune folder, for the whole search.
  const train::DirLock lock(out.string());
  try {
    return tune_locked(o, preloaded);
  } catch (...) {
    if (!existed) train::remove_if_only_lock(out.string());
    throw;
  }
}

namespace {

/// --overwrite: the previous search's files go before anything is read.
void clear_outputs(const fs::path& out) {
  std::error_code ec;
  for (const char* f : {"trials.jsonl", "trials.csv", "results.md", "best.json",
                        "trials", "refit"}) {
    fs::remove_all(out / f, ec);
  }
}

/// Reuse a stored trial only if everything that shaped it matches: a
/// changed --epochs, --size or data set makes other trials, not the same.
void check_stored_trials(const TuneOptions& o,
                         const std::vector<TrialResult>& done,
                         const data::Dataset& ds) {
  for (const auto& r : done) {
    if (r.settings.is_null()) {
      throw ConfigError("'" + o.out_dir +
                        "' holds trials from an older cxr that did not "
                        "record their settings; use another --out or "
                        "--overwrite");
    }
    train::RunOptions ro = o.base;
    apply_params(r.params, ro);
    const auto now = trial_settings(ro, ds);
    if (r.settings != now) {
      throw ConfigError("'" + o.out_dir + "' was tuned with " +
                        first_difference(r.settings, now) +
                        "; use another --out or --overwrite");
    }
  }
}

}  // namespace

namespace detail {

std::vector<Params> listed_trials(const TuneOptions& o, bool note) {
  const auto generated = o.mode == "grid"
                             ? grid_trials(o.space)
                             : random_trials(o.space, o.trials, o.seed);
  std::vector<Params> trials;
  std::set<std::string> kept;
  for (const auto& g : generated) {
    Params p = without_unused_params(g, o.base.train.optimizer);
    if (kept.insert(trial_key(p)).second) trials.push_back(std::move(p));
  }
  if (note && trials.size() < generated.size()) {
    const size_t dropped = generated.size() - trials.size();
    std::cerr << "cxr tune: momentum applies to optimizer sgd only; " << dropped
              << (dropped == 1 ? " trial that differs" : " trials that differ")
              << " from another only in momentum "
              << (dropped == 1 ? "is" : "are") << " not run ("
              << generated.size() << " -> " << trials.size() << " trials)\n";
  }
  return trials;
}

TrialResult train_trial(const TuneOptions& o,
                        const data::Dataset& ds,
                        const Params& p,
                        const TrialSlot& slot) {
  const std::string key = trial_key(p);
  const int k = slot.k, total = slot.total;
  train::RunOptions ro = o.base;
  apply_params(p, ro);
  // A terminal shows the trial lines alone (a bar per epoch would scroll
  // them away); a log (stderr not a terminal) also gets the trainer's one
  // plain line per epoch, prefixed with the trial, so a long trial is
  // not silent.
  const bool epoch_lines = o.progress && ::isatty(STDERR_FILENO) == 0;
  ro.train.progress = epoch_lines;
  TrialResult r;
  r.index = slot.index;
  r.params = p;
  r.key = key;
  r.settings = trial_settings(ro, ds);
  char name[32];
  std::snprintf(name, sizeof name, "trial-%03d", r.index);
  r.run_dir = (fs::path(o.out_dir) / "trials" / name).string();
  // An interrupted trial left a partial folder: it is redone from scratch.
  std::error_code ec;
  fs::remove_all(r.run_dir, ec);
  ro.out_dir = r.run_dir;
  ro.resume = false;
  if (o.progress) {
    std::cerr << "trial " << k + 1 << "/" << total << "  " << key
              << (!std::isnan(slot.eta_seconds)
                      ? "  (ETA " + format_duration(slot.eta_seconds) + ")"
                      : "")
              << "\n";
  }
  const auto ts = std::chrono::steady_clock::now();
  std::optional<CerrLinePrefix> prefix;
  if (epoch_lines) {
    prefix.emplace("trial " + std::to_string(k + 1) + "/" +
                   std::to_string(total) + " ");
  }
  const train::TrainResult t = train::train_run(ro, &ds);
  prefix.reset();
  r.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - ts)
          .count();
  r.best_epoch = t.best_epoch;
  r.val_loss = t.best_val_loss;
  if (t.val) {
    r.val_accuracy = t.val->accuracy;
    r.val_precision = t.val->precision;
    r.val_recall = t.val->recall;
    r.val_auc = t.val->auc;
  }
  r.frozen_epochs = t.frozen_epochs;
  return r;
}

void print_trial_line(const TrialResult& r) {
  std::cerr << "  -> val loss " << fmt(r.val_loss) << "  acc "
            << fmt(r.val_accuracy, 3) << "  recall " << fmt(r.val_recall, 3)
            << "  AUC " << fmt(r.val_auc, 3) << "  best epoch " << r.best_epoch
            << "  " << format_duration(r.seconds) << "\n";
}

}  // namespace detail

namespace {

/// One search: the trials it visits (stored ones reused, new ones trained
/// into OUT/trials/trial-NNN and appended to the store) and the budget.
class Search {
 public:
  Search(const TuneOptions& o,
         const data::Dataset& ds,
         const std::vector<TrialResult>& done)
      : o_(o), ds_(ds), out_(o.out_dir), store_(out_ / "trials.jsonl") {
    for (const auto& r : done) {
      by_key_[r.key] = r;
      next_index_ = std::max(next_index_, r.index + 1);
    }
  }

  /// Every value of each parameter in turn, the others at their best so far.
  void sequential() {
    Params current;
    for (const auto& p : o_.space.params) {
      if (p.is_range) {
        throw ConfigError("search-space parameter '" + p.name +
                          "' is a low..high range: --mode sequential needs "
                          "value lists");
      }
      current[p.name] = p.values.front();
    }
    int total = 0;
    for (const auto& p : o_.space.params) {
      total += static_cast<int>(p.values.size());
    }
    int k = 0;
    for (const auto& p : o_.space.params) {
      const TrialResult* best = nullptr;
      std::string best_value;
      for (const auto& v : p.values) {
        Params q = current;
        q[p.name] = v;
        const TrialResult* r = trial(q, k++, total);
        if (!r) break;
        if (!best || r->score(o_.metric) > best->score(o_.metric)) {
          best = r;
          // Not best->params: a momentum a trial does not use was dropped
          // from them.
          best_value = v;
        }
      }
      if (best) current[p.name] = best_value;
      if (budget_hit_) break;
    }
  }

  /// The trials in order, until the budget stops new ones.
  void listed(const std::vector<Params>& trials) {
    for (size_t k = 0; k < trials.size(); ++k) {
      if (!trial(trials[k], static_cast<int>(k),
                 static_cast<int>(trials.size()))) {
        break;
      }
    }
  }

  /// The distinct trials visited, in order (sequential revisits the
  /// current best).
  std::vector<TrialResult> distinct() const {
    std::vector<TrialResult> unique;
    std::set<std::string> keys;
    for (const auto& r : session_) {
      if (keys.insert(r.key).second) unique.push_back(r);
    }
    return unique;
  }
  bool budget_hit() const { return budget_hit_; }
  int ran_now() const { return ran_now_; }
  double elapsed_minutes() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_)
               .count() /
           60.0;
  }

 private:
  /// Trial k of `total`: the stored result, a new run, or null when the
  /// budget allows no new trial.
  const TrialResult* trial(const Params& given, int k, int total) {
    // Sequential mode varies momentum under adam too: the same trial.
    const Params p = without_unused_params(given, o_.base.train.optimizer);
    const std::string key = trial_key(p);
    if (auto it = by_key_.find(key); it != by_key_.end()) {
      session_.push_back(it->second);
      return &it->second;
    }
    if (o_.budget_minutes && elapsed_minutes() >= *o_.budget_minutes) {
      budget_hit_ = true;
      return nullptr;
    }
    const double eta =
        ran_now_ > 0 ? ran_seconds_ / ran_now_ * (total - k) : NAN;
    TrialResult r =
        detail::train_trial(o_, ds_, p, {k, total, next_index_++, eta});
    append_store(store_, r);
    ++ran_now_;
    ran_seconds_ += r.seconds;
    if (o_.progress) detail::print_trial_line(r);
    by_key_[key] = r;
    session_.push_back(r);
    return &by_key_[key];
  }

  const TuneOptions& o_;
  const data::Dataset& ds_;
  const fs::path out_;
  const fs::path store_;
  std::map<std::string, TrialResult> by_key_;
  int next_index_ = 0;
  const std::chrono::steady_clock::time_point t0_ =
      std::chrono::steady_clock::now();
  bool budget_hit_ = false;
  int ran_now_ = 0;
  double ran_seconds_ = 0;
  std::vector<TrialResult> session_;  // every trial of this search, in order
};

/// `--refit`: the best trial's recipe on train+val into OUT/refit, then
/// evaluated on test.
RefitResult refit_and_evaluate(const TuneOptions& o,
                               const TrialResult& best,
                               const data::Dataset& ds) {
  train::RunOptions ro = refit_options(o.base, best);
  RefitResult rr;
  rr.epochs = ro.stop_after_epoch > 0
                  ? ro.stop_after_epoch
                  : ro.train.epochs + (!models::is_transfer(ro.model.arch)
                                           ? 0
                                           : ro.train.fine_tune_epochs);
  ro.out_dir = (fs::path(o.out_dir) / "refit").string();
  ro.resume = false;
  std::error_code ec;
  fs::remove_all(ro.out_dir, ec);
  ro.train.progress = o.progress;
  if (o.progress) {
    std::cerr << "refit on train+val: " << best.key << " for " << rr.epochs
              << " epochs\n";
  }
  train::train_run(ro, &ds);
  evaluate::EvalOptions eo;
  eo.run_dir = ro.out_dir;
  eo.split = "test";
  eo.device = ro.device;
  eo.cache_dir = o.base.data.cache_dir;
  eo.data_root = o.base.data.root;
  const auto m = evaluate::evaluate_run(eo).metrics;
  rr.run_dir = ro.out_dir;
  rr.accuracy = m.accuracy;
  rr.recall = m.recall;
  rr.specificity = m.specificity;
  rr.auc = m.auc;
  return rr;
}

TuneResult tune_locked(const TuneOptions& o, const data::Dataset* preloaded) {
  const fs::path out(o.out_dir);
  const fs::path store = out / "trials.jsonl";
  if (o.overwrite) clear_outputs(out);
  const std::vector<TrialResult> done = read_store(store);
  data::Dataset owned;
  if (!preloaded) owned = data::load_dataset(o.base.data);
  const data::Dataset& ds = preloaded ? *preloaded : owned;
  check_stored_trials(o, done, ds);
  if (fs::exists(store)) {
    // Drop a torn last line (interrupted write) so appends stay parseable.
    std::string clean;
    for (const auto& r : done) clean += r.to_json().dump() + "\n";
    write_text_atomic(store, clean);
  }

  if (dist::world().distributed()) {
    // Each trial trains in one process (world() single-process inside the
    // scope, the refit too); the job's store hands out the trials.
    dist::SoloScope solo;
    return finish(o, ds, detail::tune_main(o, ds, done, solo.job()));
  }
  Search search(o, ds, done);
  if (o.mode == "sequential") {
    search.sequential();
  } else {
    search.listed(detail::listed_trials(o, o.progress));
  }
  return finish(o, ds,
                {search.distinct(), search.ran_now(), search.budget_hit(),
                 search.elapsed_minutes()});
}

TuneResult finish(const TuneOptions& o,
                  const data::Dataset& ds,
                  const detail::SearchOutcome& search) {
  const fs::path out(o.out_dir);
  const std::vector<TrialResult>& unique = search.unique;
  if (unique.empty()) {
    throw ConfigError("--budget-minutes " +
                      fmt(o.budget_minutes.value_or(0), 1) +
                      ": no trial could start; raise the budget");
  }
  write_tables(out, unique, o.metric, o.mode);
  TuneResult result;
  result.metric = o.metric;
  result.mode = o.mode;
  result.trials = static_cast<int>(unique.size());
  result.trials_run_now = search.ran_now;
  result.budget_minutes = o.budget_minutes;
  result.budget_exhausted = search.budget_hit;
  result.minutes = search.minutes;
  result.best =
      *std::max_element(unique.begin(), unique.end(),
                        [&](const TrialResult& a, const TrialResult& b) {
                          return a.score(o.metric) < b.score(o.metric);
                        });
  result.out_dir = o.out_dir;
  if (search.budget_hit && o.progress) {
    std::cerr << "cxr tune: --budget-minutes " << *o.budget_minutes
              << " reached; " << unique.size()
              << " trials done, the rest not started\n";
  }
  if (o.refit) result.refit = refit_and_evaluate(o, result.best, ds);
  write_json_atomic(out / "best.json", result.to_json());
  return result;
}

}  // namespace

}  // namespace cxr::tune
