// Distributed `cxr tune` (docs/distributed.md): 2 ranks claiming trials
// through the store give the trials.csv rows and best.json of 1 rank; a
// rank killed mid-search fails the run with the launcher's one line, and
// the same command again runs only the trials that were not finished.
// Workers are processes on 127.0.0.1 (the launcher picks a free port);
// every wait is bounded.
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "dist_test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace cxr::testing;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty()) out.push_back(l);
  }
  return out;
}

std::vector<std::string> fields_of(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string f; std::getline(in, f, ',');) out.push_back(f);
  return out;
}

/// trials.csv without the columns that differ between any two runs (the
/// seconds) or name the output folder (run_dir: trial-NNN is kept).
std::vector<std::string> comparable_rows(const fs::path& csv) {
  const auto lines = lines_of(read_text(csv));
  std::vector<std::string> out;
  if (lines.empty()) return out;
  const auto head = fields_of(lines[0]);
  for (const auto& l : lines) {
    const auto f = fields_of(l);
    std::string row;
    for (size_t i = 0; i < f.size() && i < head.size(); ++i) {
      if (head[i] == "seconds") continue;
      std::string v = f[i];
      if (head[i] == "run_dir") v = fs::path(v).filename().string();
      row += v + "|";
    }
    out.push_back(row);
  }
  return out;
}

/// Waits (bounded, 120 s) until the trial store holds a first trial.
void wait_for_a_stored_trial(const fs::path& store) {
  cxr::testing::wait_until(
      [&] {
        return !lines_of(fs::exists(store) ? read_text(store) : "").empty();
      },
      120, 20);
}

/// A 4-trial grid on the tiny dataset, one thread per worker (so a trial's
/// result does not depend on which rank trained it).
std::string tune_cmd(const TempDir& dir, const std::string& out, int epochs) {
  return std::string(CXR_BINARY) + " tune " + (dir / "data").string() +
         " --grid lr=0.01,0.03 dropout=0,0.2 --size 16 --filters 4,8 "
         "--batch-norm false --no-augment --patience 0 --batch-size 6 "
         "--threads 1 --no-cache --device cpu --epochs " +
         std::to_string(epochs) + " --out " + (dir / out).string();
}

TEST(DistTune, TwoRanksGiveTheTrialsAndWinnerOfOneRank) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  std::string log1, log2;
  ASSERT_EQ(cxr::testing::run_command(tune_cmd(dir, "one", 2), &log1), 0)
      << log1;
  ASSERT_EQ(
      cxr::testing::run_command(
          tune_cmd(dir, "two", 2) + " --nproc 2 --dist-timeout 60", &log2),
      0)
      << log2;
  const auto one = comparable_rows(dir / "one" / "trials.csv");
  const auto two = comparable_rows(dir / "two" / "trials.csv");
  ASSERT_EQ(one.size(), 5u);  // header + 4 trials
  EXPECT_EQ(two, one);
  // Both ranks trained trials; rank 0 alone wrote and printed the summary.
  EXPECT_GE(count_of(log2, "[rank 1] trial "), 1) << log2;
  EXPECT_GE(count_of(log2, "\ntrial ") + (log2.rfind("trial ", 0) == 0), 1)
      << log2;
  EXPECT_EQ(count_of(log2, "best of 4 trials"), 1) << log2;
  EXPECT_EQ(count_of(log2, "[rank 1] best of"), 0) << log2;
  for (int i = 0; i < 4; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "trial-%03d", i);
    EXPECT_TRUE(fs::exists(dir / "two" / "trials" / name / "config.json"))
        << name;
  }
  const auto b1 = nlohmann::json::parse(read_text(dir / "one" / "best.json"));
  const auto b2 = nlohmann::json::parse(read_text(dir / "two" / "best.json"));
  EXPECT_EQ(b2["best"]["key"], b1["best"]["key"]);
  EXPECT_EQ(b2["best"]["index"], b1["best"]["index"]);
  EXPECT_NEAR(b2["best"]["val_loss"].get<double>(),
              b1["best"]["val_loss"].get<double>(), 1e-9);
  EXPECT_EQ(b2["trials"], 4);
  EXPECT_EQ(b2["trials_run_now"], 4);
  EXPECT_EQ(b2["budget_exhausted"], false);
  // trials.jsonl holds each trial once.
  EXPECT_EQ(lines_of(read_text(dir / "two" / "trials.jsonl")).size(), 4u);
}

TEST(DistTune, KilledRankFailsTheRunAndTheSameCommandRunsTheRest) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const std::string cmd = tune_cmd(dir, "t", 100) + " --nproc 2";
  const fs::path log = dir / "launch.log";
  const pid_t launcher = spawn(cmd + " > " + log.string() + " 2>&1");
  // Once a first trial is stored, rank 1 is training another one.
  const fs::path store = dir / "t" / "trials.jsonl";
  wait_for_a_stored_trial(store);
  const pid_t victim = cxr::testing::worker_of_rank(launcher, 1);
  ASSERT_GT(victim, 0) << "rank 1 not found: " << read_text(log);
  ::kill(victim, SIGKILL);
  const int st = wait_bounded(launcher, 60);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 128 + SIGKILL) << read_text(log);
  const std::string text = read_text(log);
  EXPECT_NE(text.find("cxr: error: rank 1 was killed by SIGKILL"),
            std::string::npos)
      << text;
  EXPECT_EQ(count_of(text, "cxr: error"), 1) << text;
  EXPECT_TRUE(cxr::testing::children_of(launcher).empty());

  // The stored trials are whole and distinct; at least one is missing.
  const auto stored = lines_of(read_text(store));
  ASSERT_GE(stored.size(), 1u);
  ASSERT_LT(stored.size(), 4u) << "the search finished before the kill";
  std::set<std::string> keys;
  for (const auto& l : stored) {
    keys.insert(nlohmann::json::parse(l).at("key").get<std::string>());
  }
  EXPECT_EQ(keys.size(), stored.size());

  std::string again;
  ASSERT_EQ(cxr::testing::run_command(cmd + " --dist-timeout 60", &again), 0)
      << again;
  EXPECT_NE(again.find("(" + std::to_string(stored.size()) + " stored)"),
            std::string::npos)
      << again;
  const auto best = nlohmann::json::parse(read_text(dir / "t" / "best.json"));
  EXPECT_EQ(best["trials"], 4);
  EXPECT_EQ(best["trials_run_now"], static_cast<int>(4 - stored.size()));
  EXPECT_EQ(lines_of(read_text(dir / "t" / "trials.csv")).size(), 5u);
  EXPECT_EQ(lines_of(read_text(store)).size(), 4u);
}

TEST(DistTune, ScheduledRankThatDiesIsNamedByRankZero) {
  // torchrun's environment, no launcher: rank 0 runs the other trials, then
  // sees rank 1's heartbeat stop and fails with one line naming it.
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const std::string env =
      cxr::testing::scheduled_env(cxr::testing::free_port()) +
      "LOCAL_WORLD_SIZE=2 ";
  const std::string cmd = tune_cmd(dir, "t", 100) + " --dist-timeout 5";
  const pid_t r0 = spawn(env + "RANK=0 LOCAL_RANK=0 " + cmd + " > " +
                         (dir / "r0.log").string() + " 2>&1");
  const pid_t r1 = spawn(env + "RANK=1 LOCAL_RANK=1 " + cmd + " > " +
                         (dir / "r1.log").string() + " 2>&1");
  const fs::path store = dir / "t" / "trials.jsonl";
  wait_for_a_stored_trial(store);
  ::kill(r1, SIGKILL);
  wait_bounded(r1, 10);
  const int st = wait_bounded(r0, 120);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 5);
  const std::string text = read_text(dir / "r0.log");
  EXPECT_NE(text.find("cxr: error: rank 1 stopped answering"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("run the same command again"), std::string::npos) << text;
  EXPECT_EQ(count_of(text, "cxr: error"), 1) << text;
  // Rank 0 ran and stored every trial but the one rank 1 held (if the kill
  // fell between two of its trials, it held none).
  EXPECT_GE(lines_of(read_text(store)).size(), 3u) << text;
}

TEST(DistTune, TheBudgetStopsClaimingOnEveryRank) {
  // 0.03 min = 1.8 s against ~6 s per 1,000-epoch trial: each rank claims at
  // most one trial (normally both claim one at once) and none after the
  // budget, so the search stops after the grid's first one or two trials of
  // four. (A 100-epoch trial took ~0.6 s, as long as the old 0.6 s budget,
  // and the test failed once under load.)
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  std::string log;
  ASSERT_EQ(cxr::testing::run_command(tune_cmd(dir, "b", 1000) +
                                          " --budget-minutes 0.03 "
                                          "--nproc 2 --dist-timeout 60",
                                      &log),
            0)
      << log;
  const auto best = nlohmann::json::parse(read_text(dir / "b" / "best.json"));
  const int trials = best["trials"].get<int>();
  EXPECT_GE(trials, 1) << log;
  EXPECT_LE(trials, 2) << log;
  EXPECT_EQ(best["budget_exhausted"], true);
  const auto rows = comparable_rows(dir / "b" / "trials.csv");
  ASSERT_EQ(rows.size(), static_cast<size_t>(trials) + 1);
  for (int i = 0; i < trials; ++i) {
    const std::string lead = std::to_string(i) + "|";
    EXPECT_EQ(rows[static_cast<size_t>(i) + 1].rfind(lead, 0), 0u)
        << rows[static_cast<size_t>(i) + 1];
  }
  EXPECT_NE(log.find("--budget-minutes 0.03 reached"), std::string::npos)
      << log;
}

TEST(DistTune, SequentialModeIsRefusedWithRanks) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  std::string log;
  EXPECT_EQ(cxr::testing::run_command(
                tune_cmd(dir, "s", 1) + " --mode sequential --nproc 2", &log),
            2)
      << log;
  EXPECT_NE(log.find("--mode sequential"), std::string::npos) << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
  EXPECT_FALSE(fs::exists(dir / "s"));
}

}  // namespace
