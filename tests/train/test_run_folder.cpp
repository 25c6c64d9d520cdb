// Run folders that cannot be mixed up: one writer at a time (a lock held for
// the whole command), no silent overwrite of a finished run (and --overwrite
// swaps the new run in only when it is complete), weights of another input
// size refused, and a resume that keeps the saved settings.
#include <unistd.h>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/train/run.h"
#include "cxr/train/run_dir.h"
#include "test_util.h"

namespace {

using cxr::testing::TempDir;
namespace fs = std::filesystem;

cxr::train::RunOptions tiny_run(const fs::path& dir, const std::string& out) {
  return cxr::testing::tiny_run_options(dir, out);
}

using cxr::testing::error_of;

using cxr::testing::contains;

TEST(RunFolderLock, ASecondWriterFailsAtOnceNamingTheHolder) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const fs::path run = dir / "run";
  {
    // This process holds the folder as a running `cxr train` would.
    cxr::train::DirLock lock(run.string());
    EXPECT_TRUE(fs::exists(run / cxr::train::kLockFile));
    // Another writer in this process is refused too (locks are per open).
    const auto e = error_of<cxr::IoError>(
        [&] { cxr::train::DirLock again(run.string()); });
    EXPECT_TRUE(contains(e, "is in use by another cxr process (pid " +
                                std::to_string(::getpid()) + ")"))
        << e;
    // ... and so is the binary, at once, with exit 5 and one line.
    for (const std::string sub : {"train", "tune", "study"}) {
      std::string out;
      const std::string data_arg = sub == "study" ? " --data " : " ";
      const int rc = cxr::testing::run_command(
          std::string(CXR_BINARY) + " " + sub + data_arg +
              (dir / "data").string() + " --out " + run.string() +
              " --size 16 --device cpu --no-cache" +
              (sub == "study" ? " --no-weights --quick" : " --epochs 1") +
              (sub == "tune" ? " --grid lr=1e-3" : ""),
          &out);
      EXPECT_EQ(rc, 5) << sub << ": " << out;
      EXPECT_TRUE(contains(out, "'" + run.string() +
                                    "' is in use by another cxr "
                                    "process (pid " +
                                    std::to_string(::getpid()) + ")"))
          << sub << ": " << out;
      EXPECT_TRUE(contains(out, "wait for it or choose another --out")) << out;
      EXPECT_FALSE(fs::exists(run / "config.json")) << sub;
    }
  }
  // Released when the holder ends: the lock can be taken again.
  EXPECT_NO_THROW(cxr::train::DirLock(run.string()));
}

TEST(RunFolderOverwrite, FinishedRunIsRefusedThenReplacedWhole) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto o = tiny_run(dir.path(), "run");
  cxr::train::train_run(o);
  const auto first = cxr::read_json(fs::path(o.out_dir) / "config.json");

  auto again = tiny_run(dir.path(), "run");
  again.train.epochs = 1;
  const auto e =
      error_of<cxr::ConfigError>([&] { cxr::train::train_run(again); });
  EXPECT_TRUE(contains(e, "holds a finished run; pass --overwrite")) << e;
  EXPECT_EQ(cxr::read_json(fs::path(o.out_dir) / "config.json"), first);

  // A retrain that fails part-way leaves the old run as it was (here the
  // data does not match the model: refused after the work folder exists).
  again.overwrite = true;
  auto ds = cxr::data::load_dataset(again.data);
  auto wrong = again;
  wrong.model.input_size = 24;
  EXPECT_THROW(cxr::train::train_run(wrong, &ds), cxr::ConfigError);
  EXPECT_EQ(cxr::read_json(fs::path(o.out_dir) / "config.json"), first);
  EXPECT_NO_THROW(cxr::train::load_run(o.out_dir, torch::kCPU));
  EXPECT_FALSE(fs::exists(dir / "run.partial"));
  // A new folder whose run fails before writing anything is not left behind.
  wrong.overwrite = false;
  wrong.out_dir = (dir / "fresh").string();
  EXPECT_THROW(cxr::train::train_run(wrong, &ds), cxr::ConfigError);
  EXPECT_FALSE(fs::exists(dir / "fresh"));

  // --overwrite that completes: the new run, whole, under the old name.
  auto cfg = cxr::train::train_run(again, &ds).to_json();
  EXPECT_EQ(cfg["train"]["epochs"], 1);
  const auto now = cxr::read_json(fs::path(o.out_dir) / "config.json");
  EXPECT_EQ(now["train"]["epochs"], 1);
  EXPECT_EQ(now["result"]["epochs_run"], 1);
  EXPECT_FALSE(fs::exists(dir / "run.partial"));
  EXPECT_FALSE(fs::exists(dir / "run.old"));
  EXPECT_NO_THROW(cxr::train::load_run(o.out_dir, torch::kCPU));
  const auto card = cxr::read_text(fs::path(o.out_dir) / "model-card.md");
  EXPECT_FALSE(contains(card, ".partial")) << card;

  // --resume and --overwrite together are refused.
  again.resume = true;
  EXPECT_TRUE(contains(
      error_of<cxr::ConfigError>([&] { cxr::train::train_run(again); }),
      "not both"));
}

TEST(RunFolderOverwrite, WeightsOfAnotherInputSizeAreAModelError) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto a = tiny_run(dir.path(), "a16");
  a.train.epochs = 1;
  cxr::train::train_run(a);
  auto b = tiny_run(dir.path(), "b24");
  b.train.epochs = 1;
  b.data.size = 24;
  b.model.input_size = 24;
  cxr::train::train_run(b);
  // The baseline pools globally: the tensor shapes agree, the sizes do not.
  fs::copy_file(fs::path(a.out_dir) / "model.safetensors",
                fs::path(b.out_dir) / "model.safetensors",
                fs::copy_options::overwrite_existing);
  const auto e = error_of<cxr::ModelError>(
      [&] { cxr::train::load_run(b.out_dir, torch::kCPU); });
  EXPECT_TRUE(contains(e, "trained at 16 px but config.json says 24 px")) << e;
}

// Turns the finished run in `dir` into one interrupted after epoch 1.
void make_interrupted(const cxr::train::RunOptions& o) {
  const fs::path d(o.out_dir);
  auto run = cxr::train::load_run(o.out_dir, torch::kCPU);
  torch::optim::Adam opt(run.model->parameters(),
                         torch::optim::AdamOptions(run.meta.train.lr));
  cxr::train::FitResult res;
  res.history = cxr::train::read_history_csv((d / "history.csv").string());
  res.history.resize(1);
  res.best_epoch = 1;
  res.best_val_loss = res.history[0].val_loss;
  cxr::train::TrainState st;
  st.result = &res;
  st.optimizer = &opt;
  st.epoch_in_phase = 1;
  st.lr = run.meta.train.lr;
  cxr::train::save_resume_state(o.out_dir, *run.model, st,
                                cxr::train::snapshot(*run.model));
  auto j = cxr::read_json(d / "config.json");
  j["status"] = "training";
  cxr::write_json_atomic(d / "config.json", j);
  fs::remove(d / "model.safetensors");
}

TEST(RunFolderResume, GivenFlagsMustMatchTheSavedRunOthersAreTakenFromIt) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  auto o = tiny_run(dir.path(), "run");
  o.train.lr = 1e-3;
  cxr::train::train_run(o);
  make_interrupted(o);

  auto r = tiny_run(dir.path(), "run");
  r.resume = true;
  r.train.lr = 0.01;
  r.flags_given = {"--lr", "--quiet"};
  auto e = error_of<cxr::ConfigError>([&] { cxr::train::train_run(r); });
  EXPECT_TRUE(contains(e,
                       "--lr 0.01 differs from the resumed run's 0.001; resume "
                       "without it or start a new run"))
      << e;
  r.flags_given = {"--filters"};
  r.model.filters = {8, 16};
  e = error_of<cxr::ConfigError>([&] { cxr::train::train_run(r); });
  EXPECT_TRUE(contains(e, "--filters 8,16 differs from the resumed run's 4,8"))
      << e;
  r.flags_given = {"--size"};
  r.data.size = 24;
  e = error_of<cxr::ConfigError>([&] { cxr::train::train_run(r); });
  EXPECT_TRUE(contains(e, "--size 24 differs from the resumed run's 16")) << e;

  r.flags_given = {"--no-augment"};
  r.train.augment = false;
  e = error_of<cxr::ConfigError>([&] { cxr::train::train_run(r); });
  EXPECT_TRUE(
      contains(e,
               "--no-augment differs from the resumed run, which trains "
               "with augmentation"))
      << e;

  // Flags not given take the saved values (not the defaults in `r`), and
  // config.json records what was trained.
  r.flags_given = {"--lr"};
  r.train.lr = 1e-3;
  auto cfg = cxr::train::train_run(r).to_json();
  EXPECT_EQ(cfg["train"]["lr"], 1e-3);
  EXPECT_EQ(cfg["model"]["filters"], nlohmann::json({4, 8}));
  EXPECT_EQ(cfg["model"]["input_size"], 16);
  EXPECT_EQ(cfg["result"]["epochs_run"], 2);
  EXPECT_FALSE(fs::exists(fs::path(o.out_dir) / "state.pt"));
}

}  // namespace
