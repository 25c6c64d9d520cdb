// Distributed `cxr tune` (docs/distributed.md): 2 ranks claiming trials
// through the store give the trials.csv rows and best.json of 1 rank; a
// rank killed mid-search fails the run with the launcher's one line, and
// the same command again runs only the trials that were not finished.
// Workers are processes on 127.0.0.1 (the launcher picks a free port);
// every wait is bounded.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::testing::TempDir;

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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

int count_of(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t p = text.find(part); p != std::string::npos;
       p = text.find(part, p + 1)) {
    ++n;
  }
  return n;
}

/// trials.csv without the columns that differ between any two runs (the
/// seconds) or name the output folder (run_dir: trial-NNN is kept).
std::vector<std::string> comparable_rows(const fs::path& csv) {
  const auto lines = lines_of(slurp(csv));
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

/// A TCP port that nobody listens on now.
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  EXPECT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(s);
  return ntohs(a.sin_port);
}

pid_t spawn(const std::string& cmd) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

int wait_bounded(pid_t pid, double seconds) {
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int st = 0;
  while (::waitpid(pid, &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) {
      ADD_FAILURE() << "pid " << pid << " still runs after " << seconds
                    << " s: killed";
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return st;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" +
                   std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t c; in >> c;) out.push_back(c);
  return out;
}

int rank_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ");
  std::string all((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  for (size_t at = 0; at < all.size();) {
    const auto end = all.find('\0', at);
    const std::string kv = all.substr(at, end - at);
    if (kv.rfind("RANK=", 0) == 0) return std::stoi(kv.substr(5));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return -1;
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
  const auto b1 = nlohmann::json::parse(slurp(dir / "one" / "best.json"));
  const auto b2 = nlohmann::json::parse(slurp(dir / "two" / "best.json"));
  EXPECT_EQ(b2["best"]["key"], b1["best"]["key"]);
  EXPECT_EQ(b2["best"]["index"], b1["best"]["index"]);
  EXPECT_NEAR(b2["best"]["val_loss"].get<double>(),
              b1["best"]["val_loss"].get<double>(), 1e-9);
  EXPECT_EQ(b2["trials"], 4);
  EXPECT_EQ(b2["trials_run_now"], 4);
  EXPECT_EQ(b2["budget_exhausted"], false);
  // trials.jsonl holds each trial once.
  EXPECT_EQ(lines_of(slurp(dir / "two" / "trials.jsonl")).size(), 4u);
}

TEST(DistTune, KilledRankFailsTheRunAndTheSameCommandRunsTheRest) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const std::string cmd = tune_cmd(dir, "t", 100) + " --nproc 2";
  const fs::path log = dir / "launch.log";
  const pid_t launcher = spawn(cmd + " > " + log.string() + " 2>&1");
  // Once a first trial is stored, rank 1 is training another one.
  const fs::path store = dir / "t" / "trials.jsonl";
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < end &&
         lines_of(fs::exists(store) ? slurp(store) : "").empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  pid_t victim = -1;
  for (pid_t c : children_of(launcher)) {
    if (rank_of(c) == 1) victim = c;
  }
  ASSERT_GT(victim, 0) << "rank 1 not found: " << slurp(log);
  ::kill(victim, SIGKILL);
  const int st = wait_bounded(launcher, 60);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 128 + SIGKILL) << slurp(log);
  const std::string text = slurp(log);
  EXPECT_NE(text.find("cxr: error: rank 1 was killed by SIGKILL"),
            std::string::npos)
      << text;
  EXPECT_EQ(count_of(text, "cxr: error"), 1) << text;
  EXPECT_TRUE(children_of(launcher).empty());

  // The stored trials are whole and distinct; at least one is missing.
  const auto stored = lines_of(slurp(store));
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
  const auto best = nlohmann::json::parse(slurp(dir / "t" / "best.json"));
  EXPECT_EQ(best["trials"], 4);
  EXPECT_EQ(best["trials_run_now"], static_cast<int>(4 - stored.size()));
  EXPECT_EQ(lines_of(slurp(dir / "t" / "trials.csv")).size(), 5u);
  EXPECT_EQ(lines_of(slurp(store)).size(), 4u);
}

TEST(DistTune, ScheduledRankThatDiesIsNamedByRankZero) {
  // torchrun's environment, no launcher: rank 0 runs the other trials, then
  // sees rank 1's heartbeat stop and fails with one line naming it.
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const int port = free_port();
  const std::string env =
      "env WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 "
      "MASTER_PORT=" +
      std::to_string(port) + " ";
  const std::string cmd = tune_cmd(dir, "t", 100) + " --dist-timeout 5";
  const pid_t r0 = spawn(env + "RANK=0 LOCAL_RANK=0 " + cmd + " > " +
                         (dir / "r0.log").string() + " 2>&1");
  const pid_t r1 = spawn(env + "RANK=1 LOCAL_RANK=1 " + cmd + " > " +
                         (dir / "r1.log").string() + " 2>&1");
  const fs::path store = dir / "t" / "trials.jsonl";
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < end &&
         lines_of(fs::exists(store) ? slurp(store) : "").empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(r1, SIGKILL);
  wait_bounded(r1, 10);
  const int st = wait_bounded(r0, 120);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 5);
  const std::string text = slurp(dir / "r0.log");
  EXPECT_NE(text.find("cxr: error: rank 1 stopped answering"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("run the same command again"), std::string::npos) << text;
  EXPECT_EQ(count_of(text, "cxr: error"), 1) << text;
  // Rank 0 ran and stored every trial but the one rank 1 held (if the kill
  // fell between two of its trials, it held none).
  EXPECT_GE(lines_of(slurp(store)).size(), 3u) << text;
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
  const auto best = nlohmann::json::parse(slurp(dir / "b" / "best.json"));
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
