/// Distributed tuning (docs/distributed.md, "cxr tune"): every rank trains
/// whole trials, one process each, and the job's TCPStore hands them out.
///
/// Store keys (under the job's "cxr/" prefix):
///   tune/next          counter: claiming returns trial c = value - 1, the
///                      c-th not yet stored trial in the grid's order
///   tune/claim/<c>     the rank that claimed trial c (for error lines)
///   tune/result/<c>    its TrialResult as JSON, set when it finished
///   tune/done/<c>      counter, 1 once the result is there
///   tune/finished      counter of finished trials (rank 0 rescans on change)
///   tune/alive/<rank>  heartbeat counter, bumped every second
///   tune/exited[/<r>]  counters: ranks that will claim no more
/// Rank 0 alone appends results to trials.jsonl, as they arrive (a trial
/// finished on another rank survives a later crash of the job), and writes
/// the tables and best.json from the same trial order as a 1-rank run.
#include <atomic>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cxr/common/error.h"
#include "cxr/common/progress.h"
#include "internal.h"

namespace fs = std::filesystem;

namespace cxr::tune::detail {
namespace {

using Clock = std::chrono::steady_clock;

double minutes_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count() / 60.0;
}

std::string idx(int c) {
  return std::to_string(c);
}

/// Which stored trials are skipped: the listed trials not in the store
/// file, in order, and the index the first new one gets (as a 1-rank run
/// numbers them: after the highest stored index).
struct Plan {
  std::vector<int> pending;  ///< positions in the listed trials
  int next_index = 0;
  int total = 0;

  std::string to_text() const {
    return nlohmann::json{
        {"pending", pending}, {"next_index", next_index}, {"total", total}}
        .dump();
  }
  static Plan from_text(const std::string& text) {
    const auto j = nlohmann::json::parse(text);
    Plan p;
    p.pending = j.at("pending").get<std::vector<int>>();
    p.next_index = j.at("next_index").get<int>();
    p.total = j.at("total").get<int>();
    return p;
  }
};

/// Rank 0 decides the plan (it read the store file); every rank takes it.
Plan share_plan(dist::Context& job,
                const std::vector<Params>& listed,
                const std::vector<TrialResult>* done) {
  std::string text;
  if (done) {
    Plan p;
    std::set<std::string> stored;
    for (const auto& r : *done) {
      stored.insert(r.key);
      p.next_index = std::max(p.next_index, r.index + 1);
    }
    for (size_t k = 0; k < listed.size(); ++k) {
      if (!stored.count(trial_key(listed[k]))) {
        p.pending.push_back(static_cast<int>(k));
      }
    }
    p.total = static_cast<int>(listed.size());
    text = p.to_text();
  }
  const Plan plan = Plan::from_text(job.all_gather(text).at(0));
  if (plan.total != static_cast<int>(listed.size())) {
    throw ConfigError("rank " + std::to_string(job.rank()) + " lists " +
                      std::to_string(listed.size()) + " trials, rank 0 lists " +
                      std::to_string(plan.total) +
                      ": every rank must run the same cxr tune command");
  }
  return plan;
}

/// A thread beside the training: the rank's heartbeat, and on rank 0 the
/// collection of finished trials into trials.jsonl.
class Service {
 public:
  Service(dist::Context& job, bool collect, int pending, fs::path store)
      : job_(job),
        collect_(collect),
        pending_(pending),
        store_(std::move(store)),
        thread_([this] { loop(); }) {}
  ~Service() { stop(); }
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  /// The store failed (rank 0 is gone): the thread's one-line error.
  std::string error() {
    std::lock_guard<std::mutex> l(mu_);
    return error_;
  }
  std::map<int, TrialResult> collected() {
    std::lock_guard<std::mutex> l(mu_);
    return collected_;
  }
  /// Rescans now (rank 0, once every rank has stopped claiming).
  void collect_now() { collect(); }

 private:
  void loop() {
    auto beat = Clock::now() - std::chrono::seconds(2);
    try {
      while (!stop_) {
        if (Clock::now() - beat >= std::chrono::seconds(1)) {
          job_.add("tune/alive/" + idx(job_.rank()), 1);
          beat = Clock::now();
        }
        if (collect_) collect();
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> l(mu_);
      error_ = e.what();
    }
  }

  void collect() {
    std::lock_guard<std::mutex> once(collect_mu_);
    const int64_t finished = job_.add("tune/finished", 0);
    if (finished == seen_) return;
    seen_ = finished;
    const int claimed =
        static_cast<int>(std::min<int64_t>(job_.add("tune/next", 0), pending_));
    for (int c = 0; c < claimed; ++c) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (collected_.count(c)) continue;
      }
      if (job_.add("tune/done/" + idx(c), 0) == 0) continue;
      const TrialResult r = TrialResult::from_json(
          nlohmann::json::parse(job_.store_get("tune/result/" + idx(c))));
      append_store(store_, r);
      std::lock_guard<std::mutex> l(mu_);
      collected_[c] = r;
    }
  }

  dist::Context& job_;
  const bool collect_;
  const int pending_;
  const fs::path store_;
  std::atomic<bool> stop_{false};
  std::mutex mu_, collect_mu_;
  std::string error_;
  std::map<int, TrialResult> collected_;
  int64_t seen_ = -1;
  std::thread thread_;  // last: starts once the members above exist
};

/// Claims and trains trials until none is left or the budget allows no new
/// one; returns whether the budget stopped it.
bool claim_loop(const TuneOptions& o,
                const data::Dataset& ds,
                const std::vector<Params>& listed,
                const Plan& plan,
                dist::Context& job,
                Clock::time_point t0) {
  const int n = static_cast<int>(plan.pending.size());
  bool budget_hit = false;
  int ran = 0;
  double ran_seconds = 0;
  for (;;) {
    // As in one process: the budget stops new trials, never a started one.
    if (o.budget_minutes && minutes_since(t0) >= *o.budget_minutes) {
      budget_hit = true;
      break;
    }
    const int c = static_cast<int>(job.add("tune/next", 1) - 1);
    if (c >= n) break;
    job.store_set("tune/claim/" + idx(c), idx(job.rank()));
    const int k = plan.pending[static_cast<size_t>(c)];
    const Params& p = listed[static_cast<size_t>(k)];
    const double eta =
        ran > 0 ? ran_seconds / ran * (n - c) / std::max(1, job.world_size())
                : NAN;
    const TrialResult r =
        train_trial(o, ds, p, {k, plan.total, plan.next_index + c, eta});
    ++ran;
    ran_seconds += r.seconds;
    if (o.progress) print_trial_line(r);
    job.store_set("tune/result/" + idx(c), r.to_json().dump());
    job.add("tune/done/" + idx(c), 1);
    job.add("tune/finished", 1);
  }
  job.add("tune/exited/" + idx(job.rank()), 1);
  job.add("tune/exited", 1);
  return budget_hit;
}

/// Rank 0 waits for the trials the other ranks still train. A rank whose
/// heartbeat stops for --dist-timeout (it died without a launcher to notice,
/// as under a scheduler) ends the wait with one line.
void wait_for_ranks(dist::Context& job, Service& service, int pending) {
  const double limit_s = job.env().timeout_s;
  struct Seen {
    int64_t beats = -1;
    Clock::time_point since = Clock::now();
  };
  std::vector<Seen> seen(static_cast<size_t>(job.world_size()));
  for (;;) {
    const std::string err = service.error();
    if (!err.empty()) throw dist::DistError(err);
    const int64_t exited = job.add("tune/exited", 0);
    service.collect_now();
    const int claimed =
        static_cast<int>(std::min<int64_t>(job.add("tune/next", 0), pending));
    const auto got = service.collected();
    if (exited == job.world_size() && static_cast<int>(got.size()) == claimed) {
      return;
    }
    for (int r = 1; r < job.world_size(); ++r) {
      if (job.add("tune/exited/" + idx(r), 0) > 0) continue;
      auto& s = seen[static_cast<size_t>(r)];
      const int64_t beats = job.add("tune/alive/" + idx(r), 0);
      if (beats != s.beats) {
        s.beats = beats;
        s.since = Clock::now();
        continue;
      }
      const double quiet =
          std::chrono::duration<double>(Clock::now() - s.since).count();
      if (quiet > limit_s) {
        std::string held;
        for (int c = 0; c < claimed; ++c) {
          if (got.count(c)) continue;
          if (job.store_get("tune/claim/" + idx(c)) == idx(r)) {
            held += (held.empty() ? "" : ",") + idx(c);
          }
        }
        throw dist::DistError(
            "rank " + idx(r) + " stopped answering for " + fixed(quiet, 0) +
            " s (--dist-timeout)" +
            (held.empty() ? "" : " during claimed trial(s) " + held) +
            "; the finished trials are in trials.jsonl: run the same "
            "command again to run the rest");
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

SearchOutcome tune_main(const TuneOptions& o,
                        const data::Dataset& ds,
                        const std::vector<TrialResult>& done,
                        dist::Context& job) {
  const std::vector<Params> listed = listed_trials(o, o.progress);
  const Plan plan = share_plan(job, listed, &done);
  const auto t0 = Clock::now();
  const int n = static_cast<int>(plan.pending.size());
  Service service(job, true, n, fs::path(o.out_dir) / "trials.jsonl");
  if (o.progress) {
    std::cerr << "cxr tune: " << plan.total << " trials (" << plan.total - n
              << " stored), over " << job.world_size() << " ranks\n";
  }
  const bool budget_stop = claim_loop(o, ds, listed, plan, job, t0);
  wait_for_ranks(job, service, n);
  service.stop();
  const auto got = service.collected();

  std::map<std::string, TrialResult> by_key;
  for (const auto& r : done) by_key[r.key] = r;
  for (const auto& [c, r] : got) by_key[r.key] = r;
  SearchOutcome out;
  // The trial order of a 1-rank run: the listed trials up to the first
  // that did not run (the budget stopped claiming there).
  for (const auto& p : listed) {
    const auto it = by_key.find(trial_key(p));
    if (it == by_key.end()) break;
    out.unique.push_back(it->second);
  }
  out.ran_now = static_cast<int>(got.size());
  out.budget_hit = budget_stop || static_cast<int>(got.size()) < n;
  out.minutes = minutes_since(t0);
  return out;
}

void tune_worker(const TuneOptions& o, const data::Dataset* preloaded) {
  dist::SoloScope solo;
  dist::Context& job = solo.job();
  data::Dataset owned;
  if (!preloaded) owned = data::load_dataset(o.base.data);
  const data::Dataset& ds = preloaded ? *preloaded : owned;
  const std::vector<Params> listed = listed_trials(o, false);
  const Plan plan = share_plan(job, listed, nullptr);
  const auto t0 = Clock::now();
  // A store failure of the heartbeat is not reported: the claim loop's own
  // store calls fail the same way while they matter, and once this rank has
  // said it exited, rank 0 may finish (its store gone) before the next beat.
  Service heartbeat(job, false, 0, {});
  claim_loop(o, ds, listed, plan, job, t0);
}

}  // namespace cxr::tune::detail
