// The dist stage (docs/distributed.md): sharding helpers, the collectives of
// two ranks (threads of this process, each with its own TCPStore client and
// Gloo group), and `cxr train` with --nproc or torchrun's environment, as
// processes on 127.0.0.1: 2 ranks x batch B/2 equal 1 rank x batch B, a
// killed rank ends the job with one error line, a busy port or a missing
// master is named. Every wait is bounded (--dist-timeout, deadlines here);
// ports are found free by binding port 0, never fixed.
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "cxr/dist/dist.h"
#include "cxr/infer/run_config.h"
#include "dist_test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace cxr::testing;

/// Waits (bounded) until the run folder shows a finished epoch; false
/// at once when `pid` ended (it is left to be reaped).
bool wait_for_epoch(const fs::path& run, pid_t pid, double seconds) {
  bool ended = false;
  const bool done = cxr::testing::wait_until(
      [&] {
        if (fs::exists(run / "history.csv")) return true;
        siginfo_t info{};
        ended = ::waitid(P_PID, static_cast<id_t>(pid), &info,
                         WEXITED | WNOHANG | WNOWAIT) == 0 &&
                info.si_pid == pid;
        return ended;
      },
      seconds);
  return done && !ended;
}

/// `cxr train` of the tiny dataset: a baseline without batch norm and
/// dropout, no augmentation, one thread (the equivalence settings).
std::string train_cmd(const TempDir& dir,
                      const std::string& out,
                      int epochs,
                      int batch) {
  return std::string(CXR_BINARY) + " train " + (dir / "data").string() +
         " --size 16 --filters 4,8 --batch-norm false --dropout 0 "
         "--no-augment --lr 0.01 --patience 0 --threads 1 --no-cache "
         "--quiet --device cpu --epochs " +
         std::to_string(epochs) + " --batch-size " + std::to_string(batch) +
         " --out " + (dir / out).string();
}

TEST(DistShard, ContiguousShardsCoverEveryItemOnceInOrder) {
  for (int64_t n : {0, 1, 5, 12, 13}) {
    for (int world : {1, 2, 3, 5}) {
      int64_t next = 0;
      for (int r = 0; r < world; ++r) {
        const auto [b, e] = cxr::dist::contiguous_shard(n, r, world);
        EXPECT_EQ(b, next) << n << " " << world;
        EXPECT_LE(e - b, n / world + 1);
        EXPECT_GE(e - b, n / world);
        next = e;
      }
      EXPECT_EQ(next, n);
    }
  }
  EXPECT_THROW(cxr::dist::contiguous_shard(4, 2, 2), cxr::ConfigError);
}

TEST(DistShard, BatchSlicesAreEqualAndDisjointDroppingTheRemainder) {
  // 7 items over 2 ranks: 3 each, the 7th dropped on every rank alike.
  const auto a = cxr::dist::batch_slice(7, 0, 2);
  const auto b = cxr::dist::batch_slice(7, 1, 2);
  EXPECT_EQ(a, std::make_pair(int64_t{0}, int64_t{3}));
  EXPECT_EQ(b, std::make_pair(int64_t{3}, int64_t{6}));
  // The permutation depends on the seed only; the shards are disjoint.
  auto p1 = cxr::dist::permutation(10, 7);
  torch::manual_seed(123);  // the global generator plays no part
  EXPECT_TRUE(torch::equal(p1, cxr::dist::permutation(10, 7)));
  EXPECT_FALSE(torch::equal(p1, cxr::dist::permutation(10, 8)));
  std::set<int64_t> seen;
  for (int r = 0; r < 3; ++r) {
    auto s = cxr::dist::shard_indices(10, 7, r, 3);
    EXPECT_EQ(s.size(0), 3);
    for (int64_t i = 0; i < s.size(0); ++i) {
      EXPECT_TRUE(seen.insert(s[i].item<int64_t>()).second);
    }
  }
}

TEST(DistContext, SingleProcessCollectivesLeaveTensorsAlone) {
  cxr::dist::Context ctx;
  EXPECT_FALSE(ctx.distributed());
  EXPECT_TRUE(ctx.is_main());
  auto t = torch::arange(4, torch::kFloat32);
  ctx.all_reduce({t}, true);
  ctx.broadcast({t});
  ctx.barrier();
  EXPECT_TRUE(torch::equal(t, torch::arange(4, torch::kFloat32)));
  EXPECT_EQ(ctx.all_gather("x"), std::vector<std::string>{"x"});
  EXPECT_EQ(ctx.add("single-key", 2), 2);
  EXPECT_EQ(ctx.add("single-key", 1), 3);
}

TEST(DistContext, TwoRanksReduceBroadcastGatherAndCount) {
  const int port = free_port();
  struct Seen {
    torch::Tensor a, b, c, ints, gathered;
    std::vector<std::string> strings;
    std::vector<int64_t> claims;
    std::string error;
  };
  Seen seen[2];
  auto rank_main = [&](int rank) {
    Seen& s = seen[rank];
    try {
      cxr::dist::Env env;
      env.rank = rank;
      env.world_size = 2;
      env.local_rank = rank;
      env.master_port = port;
      env.timeout_s = 20;
      cxr::dist::Context ctx(env);
      // Three float tensors and an int one; a 100-byte bucket limit makes
      // several buckets (the 64-float tensor alone is one).
      s.a = torch::full({3}, static_cast<float>(rank + 1));
      s.b = torch::full({64}, static_cast<float>(10 * (rank + 1)));
      s.c = torch::full({2, 2}, static_cast<float>(rank));
      s.ints = torch::full({2}, static_cast<int64_t>(rank + 5));
      ctx.all_reduce({s.a, s.b, s.c}, /*average=*/true, 100);
      ctx.all_reduce({s.ints});
      auto w = torch::full({5}, static_cast<float>(rank + 7));
      ctx.broadcast({w});
      s.gathered = ctx.all_gather_cat(
          torch::full({rank + 1}, static_cast<float>(rank), torch::kFloat32));
      s.strings = ctx.all_gather(rank == 0 ? "zero" : "one, longer");
      for (int i = 0; i < 3; ++i) s.claims.push_back(ctx.add("trial", 1));
      ctx.barrier();
      EXPECT_TRUE(torch::equal(w, torch::full({5}, 7.0f)));
    } catch (const std::exception& e) {
      s.error = e.what();
    }
  };
  std::thread t0(rank_main, 0), t1(rank_main, 1);
  t0.join();
  t1.join();
  for (int r = 0; r < 2; ++r) {
    if (seen[r].error.find("built without") != std::string::npos) {
      GTEST_SKIP() << seen[r].error;
    }
    ASSERT_EQ(seen[r].error, "") << "rank " << r;
    EXPECT_TRUE(torch::allclose(seen[r].a, torch::full({3}, 1.5f)));
    EXPECT_TRUE(torch::allclose(seen[r].b, torch::full({64}, 15.0f)));
    EXPECT_TRUE(torch::allclose(seen[r].c, torch::full({2, 2}, 0.5f)));
    EXPECT_TRUE(torch::equal(seen[r].ints, torch::full({2}, int64_t{11})));
    EXPECT_TRUE(
        torch::equal(seen[r].gathered, torch::tensor({0.0f, 1.0f, 1.0f})));
    EXPECT_EQ(seen[r].strings,
              (std::vector<std::string>{"zero", "one, longer"}));
  }
  // The counter hands out 1..6 exactly once across the two ranks.
  std::set<int64_t> claims(seen[0].claims.begin(), seen[0].claims.end());
  claims.insert(seen[1].claims.begin(), seen[1].claims.end());
  EXPECT_EQ(claims, (std::set<int64_t>{1, 2, 3, 4, 5, 6}));
}

std::vector<torch::Tensor> weights_of(const fs::path& run) {
  auto cfg = cxr::infer::read_run_config(run.string());
  auto model = cxr::infer::load_model(run.string(), cfg.model, torch::kCPU);
  std::vector<torch::Tensor> out;
  for (const auto& p : model->parameters()) out.push_back(p.detach().clone());
  return out;
}

/// file -> p_COVID_raw of a predict CSV.
std::map<std::string, double> raw_scores(const fs::path& csv) {
  std::map<std::string, double> out;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    if (f.size() > 2) out[f[0]] = std::stod(f[2]);
  }
  return out;
}

TEST(DistTrain, TwoRanksOfHalfBatchesEqualOneRankOfWholeBatches) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");  // 12 train images
  std::string log1, log2;
  // Batch 6: two steps an epoch; 2 ranks take 3 images of each.
  ASSERT_EQ(cxr::testing::run_command(train_cmd(dir, "one", 3, 6), &log1), 0)
      << log1;
  ASSERT_EQ(
      cxr::testing::run_command(
          train_cmd(dir, "two", 3, 6) + " --nproc 2 --dist-timeout 60", &log2),
      0)
      << log2;
  const auto w1 = weights_of(dir / "one");
  const auto w2 = weights_of(dir / "two");
  ASSERT_EQ(w1.size(), w2.size());
  double most = 0;
  for (size_t i = 0; i < w1.size(); ++i) {
    most = std::max(most, (w1[i] - w2[i]).abs().max().item<double>());
  }
  EXPECT_LT(most, 1e-5);
  // Training happened: the weights moved away from the seed's.
  EXPECT_NE(read_text(dir / "one" / "history.csv"), "");
  const std::string cfg = read_text(dir / "two" / "config.json");
  EXPECT_NE(cfg.find("\"world_size\": 2"), std::string::npos) << cfg;
  // Rank 0 alone printed the summary.
  EXPECT_EQ(count_of(log2, "wrote "), 1) << log2;
  EXPECT_EQ(count_of(log2, "[rank 1]"), 0) << log2;

  // The 2-rank run folder predicts as the 1-rank one.
  const std::string test = (dir / "data" / "test").string();
  std::string plog;
  for (const char* run : {"one", "two"}) {
    ASSERT_EQ(
        cxr::testing::run_command(
            std::string(CXR_BINARY) + " predict " + (dir / run).string() + " " +
                test + " --csv " + (dir / (std::string(run) + ".csv")).string(),
            &plog),
        0)
        << plog;
  }
  const auto p1 = raw_scores(dir / "one.csv");
  const auto p2 = raw_scores(dir / "two.csv");
  ASSERT_EQ(p1.size(), 12u);
  ASSERT_EQ(p2.size(), 12u);
  for (const auto& [file, p] : p1) EXPECT_NEAR(p2.at(file), p, 1e-5) << file;
}

TEST(DistTrain, BatchNotDivisibleByTheRanksIsRefused) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  std::string log;
  EXPECT_EQ(
      cxr::testing::run_command(train_cmd(dir, "r", 1, 5) + " --nproc 2", &log),
      2);
  EXPECT_NE(log.find("--batch-size 5"), std::string::npos) << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
  EXPECT_FALSE(fs::exists(dir / "r"));
}

TEST(DistTrain, KilledRankStopsTheLauncherWithOneLine) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const fs::path log = dir / "launch.log";
  const pid_t launcher =
      spawn(train_cmd(dir, "r", 10000, 6) + " --nproc 2 --dist-timeout 10 > " +
            log.string() + " 2>&1");
  ASSERT_TRUE(wait_for_epoch(dir / "r", launcher, 120)) << read_text(log);
  const pid_t victim = cxr::testing::worker_of_rank(launcher, 1);
  ASSERT_GT(victim, 0) << "rank 1 not found among the launcher's children";
  ::kill(victim, SIGKILL);
  const int st = wait_bounded(launcher, 60);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 128 + SIGKILL);
  const std::string text = read_text(log);
  EXPECT_NE(text.find("cxr: error: rank 1 was killed by SIGKILL"),
            std::string::npos)
      << text;
  // The launcher's line is the last line.
  EXPECT_EQ(text.rfind("cxr: error: rank 1"), text.rfind("cxr: error")) << text;
  // No worker outlives the launcher.
  EXPECT_TRUE(cxr::testing::children_of(launcher).empty());
}

TEST(DistTrain, RankWhosePeerDiesFailsWithinTheTimeout) {
  // torchrun's environment, no launcher: nobody stops rank 0 but the
  // collective's own timeout / the closed connection.
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const std::string env = cxr::testing::scheduled_env(free_port());
  const std::string cmd = train_cmd(dir, "r", 10000, 6) + " --dist-timeout 5";
  const pid_t r0 = spawn(env + "RANK=0 LOCAL_RANK=0 " + cmd + " > " +
                         (dir / "r0.log").string() + " 2>&1");
  const pid_t r1 = spawn(env + "RANK=1 LOCAL_RANK=1 " + cmd + " > " +
                         (dir / "r1.log").string() + " 2>&1");
  ASSERT_TRUE(wait_for_epoch(dir / "r", r0, 120)) << read_text(dir / "r0.log");
  ::kill(r1, SIGKILL);
  wait_bounded(r1, 10);
  const int st = wait_bounded(r0, 60);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 5);
  const std::string text = read_text(dir / "r0.log");
  EXPECT_NE(text.find("cxr: error: rank 0: "), std::string::npos) << text;
  EXPECT_EQ(count_of(text, "\n"), count_of(text, "cxr: error")) << text;
  // The interrupted run can be resumed.
  EXPECT_TRUE(fs::exists(dir / "r" / "state.pt"));
}

TEST(DistTrain, BusyPortAndMissingMasterAreNamed) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  // A port held open by this test.
  cxr::testing::BoundPort held(/*listen=*/true);
  ASSERT_GT(held.port, 0);
  const std::string busy = std::to_string(held.port);
  const std::string where = "127.0.0.1:" + busy;
  std::string log;
  // The launcher checks before it starts the workers.
  EXPECT_EQ(
      cxr::testing::run_command(
          train_cmd(dir, "r", 1, 6) + " --nproc 2 --master-port " + busy, &log),
      2);
  EXPECT_NE(log.find(where), std::string::npos) << log;
  EXPECT_NE(log.find("in use"), std::string::npos) << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
  // Rank 0 started by a scheduler finds it taken too.
  EXPECT_EQ(cxr::testing::run_command(
                cxr::testing::scheduled_env(held.port) + "RANK=0 " +
                    train_cmd(dir, "r", 1, 6) + " --dist-timeout 5",
                &log),
            2);
  EXPECT_NE(log.find("cannot listen on " + where), std::string::npos) << log;
  held.close();
  // Rank 1 with no master: named, within the timeout.
  const int none_port = free_port();
  const std::string none = std::to_string(none_port);
  EXPECT_EQ(cxr::testing::run_command(
                cxr::testing::scheduled_env(none_port) + "RANK=1 " +
                    train_cmd(dir, "r", 1, 6) + " --dist-timeout 2",
                &log),
            5);
  EXPECT_NE(log.find("cannot reach the master at 127.0.0.1:" + none),
            std::string::npos)
      << log;
  EXPECT_EQ(count_of(log, "\n"), 1) << log;
  EXPECT_FALSE(fs::exists(dir / "r"));
}

}  // namespace
