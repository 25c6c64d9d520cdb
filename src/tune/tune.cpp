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
  const bool transfer = ro.model.arch != "baseline";
  if (transfer && best.frozen_epochs > 0 &&
      best.frozen_epochs < ro.train.epochs) {
    // Early stopping ended the trial's frozen phase there.
    ro.train.epochs = best.frozen_epochs;
  }
  const int total =
      ro.train.epochs + (transfer ? ro.train.fine_tune_epochs : 0);
  ro.stop_after_epoch =
      best.best_epoch > 0 && best.best_epoch < total ? best.best_epoch : 0;
  ro.target_sensitivity = 0;
  ro.balanced_threshold = false;
  ro.threshold_from = best.run_dir;
  ro.resume = false;
  return ro;
}

namespace {
nlohmann::json tune_locked(const TuneOptions& o,
                           const data::Dataset* preloaded);
}  // namespace

nlohmann::json run_tune(const TuneOptions& o, const data::Dataset* preloaded) {
  if (o.metric != "val_loss" && o.metric != "val_accuracy" &&
      o.metric != "val_auc" && o.metric != "val_recall") {
    throw ConfigError("--metric " + o.metric +
                      ": use val_loss, val_accuracy, val_auc or val_recall");
  }
  if (o.mode != "grid" && o.mode != "random" && o.mode != "sequential") {
    throw ConfigError("--mode " + o.mode + ": use grid, random or sequential");
  }
  if (o.budget_minutes < 0) throw ConfigError("--budget-minutes must be >= 0");
  if (o.base.train.train_on != "train") {
    throw ConfigError("tuning selects on validation: --train-on must be train");
  }
  check_space_applies(o.space, o.base.train.optimizer);
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

nlohmann::json tune_locked(const TuneOptions& o,
                           const data::Dataset* preloaded) {
  const fs::path out(o.out_dir);
  const fs::path store = out / "trials.jsonl";
  if (o.overwrite) {
    std::error_code ec;
    for (const char* f : {"trials.jsonl", "trials.csv", "results.md",
                          "best.json", "trials", "refit"}) {
      fs::remove_all(out / f, ec);
    }
  }
  std::vector<TrialResult> done = read_store(store);
  data::Dataset owned;
  if (!preloaded) owned = data::load_dataset(o.base.data);
  const data::Dataset& ds = preloaded ? *preloaded : owned;
  // Reuse a stored trial only if everything that shaped it matches: a
  // changed --epochs, --size or data set makes other trials, not the same.
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
  if (fs::exists(store)) {
    // Drop a torn last line (interrupted write) so appends stay parseable.
    std::string clean;
    for (const auto& r : done) clean += r.to_json().dump() + "\n";
    write_text_atomic(store, clean);
  }
  std::map<std::string, TrialResult> by_key;
  for (const auto& r : done) by_key[r.key] = r;
  int next_index = 0;
  for (const auto& r : done) next_index = std::max(next_index, r.index + 1);

  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed_min = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
               .count() /
           60.0;
  };
  bool budget_hit = false;
  int ran_now = 0;
  double ran_seconds = 0;
  std::vector<TrialResult> session;  // every trial of this search, in order

  auto run_trial = [&](const Params& given, int k,
                       int total) -> const TrialResult* {
    // Sequential mode varies momentum under adam too: the same trial.
    const Params p = without_unused_params(given, o.base.train.optimizer);
    const std::string key = trial_key(p);
    if (auto it = by_key.find(key); it != by_key.end()) {
      session.push_back(it->second);
      return &it->second;
    }
    if (o.budget_minutes > 0 && elapsed_min() >= o.budget_minutes) {
      budget_hit = true;
      return nullptr;
    }
    train::RunOptions ro = o.base;
    apply_params(p, ro);
    // A terminal shows the trial lines alone (a bar per epoch would scroll
    // them away); a log (stderr not a terminal) also gets the trainer's one
    // plain line per epoch, prefixed with the trial, so a long trial is
    // not silent.
    const bool epoch_lines = o.progress && ::isatty(STDERR_FILENO) == 0;
    ro.train.progress = epoch_lines;
    TrialResult r;
    r.index = next_index++;
    r.params = p;
    r.key = key;
    r.settings = trial_settings(ro, ds);
    char name[32];
    std::snprintf(name, sizeof name, "trial-%03d", r.index);
    r.run_dir = (out / "trials" / name).string();
    // An interrupted trial left a partial folder: it is redone from scratch.
    std::error_code ec;
    fs::remove_all(r.run_dir, ec);
    ro.out_dir = r.run_dir;
    ro.resume = false;
    const double eta = ran_now > 0 ? ran_seconds / ran_now * (total - k) : NAN;
    if (o.progress) {
      std::cerr << "trial " << k + 1 << "/" << total << "  " << key
                << (ran_now > 0 ? "  (ETA " + format_duration(eta) + ")" : "")
                << "\n";
    }
    const auto ts = std::chrono::steady_clock::now();
    nlohmann::json cfg;
    {
      std::optional<CerrLinePrefix> prefix;
      if (epoch_lines) {
        prefix.emplace("trial " + std::to_string(k + 1) + "/" +
                       std::to_string(total) + " ");
      }
      cfg = train::train_run(ro, &ds);
    }
    r.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - ts)
            .count();
    const auto& res = cfg["result"];
    r.best_epoch = res["best_epoch"].get<int>();
    r.val_loss = res["best_val_loss"].is_number()
                     ? res["best_val_loss"].get<double>()
                     : NAN;
    r.val_accuracy = res["val"]["accuracy"].get<double>();
    r.val_precision = res["val"]["precision"].is_number()
                          ? res["val"]["precision"].get<double>()
                          : NAN;
    r.val_recall = res["val"]["recall"].get<double>();
    r.val_auc = res["val"]["auc"].get<double>();
    for (const auto& e : train::read_history_csv(
             (fs::path(r.run_dir) / "history.csv").string())) {
      if (e.phase == "frozen") ++r.frozen_epochs;
    }
    append_store(store, r);
    ++ran_now;
    ran_seconds += r.seconds;
    if (o.progress) {
      std::cerr << "  -> val loss " << fmt(r.val_loss) << "  acc "
                << fmt(r.val_accuracy, 3) << "  recall " << fmt(r.val_recall, 3)
                << "  AUC " << fmt(r.val_auc, 3) << "  best epoch "
                << r.best_epoch << "  " << format_duration(r.seconds) << "\n";
    }
    by_key[key] = r;
    session.push_back(r);
    return &by_key[key];
  };

  if (o.mode == "sequential") {
    Params current;
    for (const auto& p : o.space.params) {
      if (p.is_range) {
        throw ConfigError("search-space parameter '" + p.name +
                          "' is a low..high range: --mode sequential needs "
                          "value lists");
      }
      current[p.name] = p.values.front();
    }
    int total = 0;
    for (const auto& p : o.space.params)
      total += static_cast<int>(p.values.size());
    int k = 0;
    for (const auto& p : o.space.params) {
      const TrialResult* best = nullptr;
      std::string best_value;
      for (const auto& v : p.values) {
        Params q = current;
        q[p.name] = v;
        const TrialResult* r = run_trial(q, k++, total);
        if (!r) break;
        if (!best || r->score(o.metric) > best->score(o.metric)) {
          best = r;
          // Not best->params: a momentum a trial does not use was dropped
          // from them.
          best_value = v;
        }
      }
      if (best) current[p.name] = best_value;
      if (budget_hit) break;
    }
  } else {
    const auto generated = o.mode == "grid"
                               ? grid_trials(o.space)
                               : random_trials(o.space, o.trials, o.seed);
    // Trials that differ only in a momentum their optimizer ignores are
    // one trial: run it once (the first), and say so.
    std::vector<Params> trials;
    std::set<std::string> kept;
    for (const auto& g : generated) {
      Params p = without_unused_params(g, o.base.train.optimizer);
      if (kept.insert(trial_key(p)).second) trials.push_back(std::move(p));
    }
    if (trials.size() < generated.size()) {
      const size_t dropped = generated.size() - trials.size();
      std::cerr << "cxr tune: momentum applies to optimizer sgd only; "
                << dropped
                << (dropped == 1 ? " trial that differs"
                                 : " trials that differ")
                << " from another only in momentum "
                << (dropped == 1 ? "is" : "are") << " not run ("
                << generated.size() << " -> " << trials.size() << " trials)\n";
    }
    for (size_t k = 0; k < trials.size(); ++k) {
      if (!run_trial(trials[k], static_cast<int>(k),
                     static_cast<int>(trials.size()))) {
        break;
      }
    }
  }
  if (session.empty()) {
    throw ConfigError("--budget-minutes " + fmt(o.budget_minutes, 1) +
                      ": no trial could start; raise the budget");
  }
  // De-duplicate (sequential revisits the current best) keeping order.
  std::vector<TrialResult> unique;
  std::set<std::string> keys;
  for (const auto& r : session) {
    if (keys.insert(r.key).second) unique.push_back(r);
  }
  write_tables(out, unique, o.metric, o.mode);
  const TrialResult best =
      *std::max_element(unique.begin(), unique.end(),
                        [&](const TrialResult& a, const TrialResult& b) {
                          return a.score(o.metric) < b.score(o.metric);
                        });
  nlohmann::json j = {{"metric", o.metric},
                      {"mode", o.mode},
                      {"trials", unique.size()},
                      {"trials_run_now", ran_now},
                      {"budget_minutes", o.budget_minutes},
                      {"budget_exhausted", budget_hit},
                      {"minutes", elapsed_min()},
                      {"best", best.to_json()}};
  if (budget_hit && o.progress) {
    std::cerr << "cxr tune: --budget-minutes " << o.budget_minutes
              << " reached; " << unique.size()
              << " trials done, the rest not started\n";
  }
  if (o.refit) {
    train::RunOptions ro = refit_options(o.base, best);
    const int refit_epochs =
        ro.stop_after_epoch > 0
            ? ro.stop_after_epoch
            : ro.train.epochs +
                  (ro.model.arch == "baseline" ? 0 : ro.train.fine_tune_epochs);
    ro.out_dir = (out / "refit").string();
    ro.resume = false;
    std::error_code ec;
    fs::remove_all(ro.out_dir, ec);
    ro.train.progress = o.progress;
    if (o.progress) {
      std::cerr << "refit on train+val: " << best.key << " for " << refit_epochs
                << " epochs\n";
    }
    train::train_run(ro, &ds);
    evaluate::EvalOptions eo;
    eo.run_dir = ro.out_dir;
    eo.split = "test";
    eo.device = ro.device;
    eo.cache_dir = o.base.data.cache_dir;
    eo.data_root = o.base.data.root;
    auto m = evaluate::evaluate_run(eo);
    j["refit"] = {{"run_dir", ro.out_dir},
                  {"epochs", refit_epochs},
                  {"test",
                   {{"accuracy", m["accuracy"]},
                    {"recall", m["recall"]},
                    {"specificity", m["specificity"]},
                    {"auc", m["auc"]}}}};
  }
  write_json_atomic(out / "best.json", j);
  return j;
}

}  // namespace

}  // namespace cxr::tune
