// Folders that cannot be listed (a symlink loop, no permission) and a data
// root that is a file: DataError naming the path (exit 3, one line), never a
// std::filesystem_error (exit 70); with --skip-bad the entry is skipped and
// listed like a bad image, by explore, predict and train.
#include <unistd.h>

#include "cxr/common/error.h"
#include "cxr/data/dataset.h"
#include "cxr/data/listing.h"
#include "cxr/train/run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::data::DatasetOptions;
using cxr::data::Split;
using namespace cxr::testing;

/// The DataError message of `f`, or "" with a failure.
template <typename F>
std::string data_error(F&& f) {
  try {
    f();
  } catch (const cxr::DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not a DataError: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

TEST(Listing, SymlinkLoopInAClassFolderIsADataErrorOrSkipped) {
  TempDir dir;
  const fs::path root = dir / "data";
  cxr::testing::make_tiny_dataset(root);
  const fs::path loop = root / "train" / "COVID" / "loop.png";
  fs::create_symlink("loop.png", loop);  // points at itself
  DatasetOptions o;
  o.root = root.string();
  o.size = 16;
  std::string m = data_error([&] { cxr::data::index_dataset(o); });
  EXPECT_TRUE(contains(m, "'" + loop.string() + "' is a symlink loop")) << m;
  EXPECT_TRUE(contains(m, "--skip-bad")) << m;
  m = data_error([&] { cxr::data::load_dataset(o); });
  EXPECT_TRUE(contains(m, loop.string())) << m;

  o.skip_bad = true;
  const auto ds = cxr::data::load_dataset(o);
  ASSERT_EQ(ds.skipped.size(), 1u);
  EXPECT_EQ(ds.skipped[0].path, loop.string());
  EXPECT_TRUE(contains(ds.skipped[0].reason, "symlink loop"));
  EXPECT_EQ(ds.split(Split::kTrain).size(), 12);
  o.skip_bad = false;

  // A loop among the class folders is skipped the same way.
  fs::create_symlink("more", root / "more");
  EXPECT_TRUE(contains(data_error([&] { cxr::data::load_dataset(o); }),
                       (root / "more").string() + "' is a symlink loop"));
  o.skip_bad = true;
  EXPECT_EQ(cxr::data::load_dataset(o).skipped.size(), 2u);
  fs::remove(root / "more");

  // A loop without an image name is still an entry that cannot be read.
  fs::remove(loop);
  const fs::path other = root / "val" / "Normal" / "notes";
  fs::create_symlink("notes", other);
  o.skip_bad = false;
  m = data_error([&] { cxr::data::index_dataset(o); });
  EXPECT_TRUE(contains(m, other.string())) << m;
}

TEST(Listing, DataRootThatIsAFileOrALoopSaysSo) {
  TempDir dir;
  DatasetOptions o;
  o.root = (dir / "data.zip").string();
  cxr::testing::write_bytes(o.root, "PK");
  std::string m = data_error([&] { cxr::data::index_dataset(o); });
  EXPECT_TRUE(contains(m, "'" + o.root + "' is a file, not a folder")) << m;
  EXPECT_FALSE(contains(m, "does not exist")) << m;
  o.root = (dir / "self").string();
  fs::create_symlink("self", o.root);
  m = data_error([&] { cxr::data::index_dataset(o); });
  EXPECT_TRUE(contains(m, "'" + o.root + "' is a symlink loop")) << m;
  o.root = (dir / "missing").string();
  m = data_error([&] { cxr::data::index_dataset(o); });
  EXPECT_TRUE(contains(m, "does not exist")) << m;
}

TEST(Listing, ListImageFilesReportsOrCollectsLoopsAndDoesNotFollowFolderLinks) {
  TempDir dir;
  const fs::path in = dir / "in";
  cxr::data::write_png((in / "a.png").string(), torch::rand({8, 8}));
  fs::create_directories(in / "sub");
  cxr::data::write_png((in / "sub" / "b.png").string(), torch::rand({8, 8}));
  fs::create_directory_symlink("..", in / "sub" / "up");  // a folder cycle
  fs::create_symlink("x.jpg", in / "x.jpg");              // a file loop
  const std::vector<std::string> inputs = {in.string()};
  std::string m = data_error([&] { cxr::data::list_image_files(inputs); });
  EXPECT_TRUE(contains(m, (in / "x.jpg").string() + "' is a symlink loop"))
      << m;
  std::vector<cxr::data::BadFile> skipped;
  const auto files = cxr::data::list_image_files(inputs, &skipped);
  EXPECT_EQ(files, (std::vector<std::string>{(in / "a.png").string(),
                                             (in / "sub" / "b.png").string()}));
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_EQ(skipped[0].path, (in / "x.jpg").string());
  // An input that is itself a loop.
  const std::string self = (dir / "self").string();
  fs::create_symlink("self", self);
  skipped.clear();
  EXPECT_TRUE(cxr::data::list_image_files({self}, &skipped).empty());
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_TRUE(contains(skipped[0].reason, "symlink loop"));
}

TEST(Listing, UnreadableFolderIsADataErrorOrSkipped) {
  if (::geteuid() == 0) {
    GTEST_SKIP() << "root reads any folder; the CLI test below covers this "
                    "case as user nobody";
  }
  TempDir dir;
  const fs::path in = dir / "in";
  cxr::data::write_png((in / "a.png").string(), torch::rand({8, 8}));
  fs::create_directories(in / "locked");
  fs::permissions(in / "locked", fs::perms::none);
  const std::vector<std::string> inputs = {in.string()};
  std::string m = data_error([&] { cxr::data::list_image_files(inputs); });
  EXPECT_TRUE(contains(m, "folder '" + (in / "locked").string() +
                              "' cannot be read (permission denied)"))
      << m;
  std::vector<cxr::data::BadFile> skipped;
  EXPECT_EQ(cxr::data::list_image_files(inputs, &skipped).size(), 1u);
  EXPECT_EQ(skipped.size(), 1u);
  fs::permissions(in / "locked", fs::perms::owner_all);
}

/// explore, predict and train through the binary: exit 3 and one line
/// without --skip-bad; with it, the entry is listed and the rest is used.
TEST(Listing, CliRefusesOrListsUnlistableEntries) {
  TempDir dir;
  const std::string bin = CXR_BINARY;
  const fs::path root = dir / "data";
  cxr::testing::make_tiny_dataset(root);
  const fs::path loop = root / "train" / "Normal" / "loop.png";
  fs::create_symlink("loop.png", loop);
  auto run = [&](const std::string& args, std::string* log) {
    return cxr::testing::run_command(bin + " " + args + " 2>&1", log);
  };
  std::string log;
  const std::string explore = "explore " + root.string() +
                              " --size 16 --no-cache --out " +
                              (dir / "explore").string();
  EXPECT_EQ(run(explore, &log), 3) << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
  EXPECT_TRUE(contains(log, loop.string() + "' is a symlink loop")) << log;
  EXPECT_FALSE(contains(log, "filesystem")) << log;
  EXPECT_EQ(run(explore + " --skip-bad", &log), 0) << log;
  EXPECT_TRUE(contains(log, loop.string())) << log;

  // train --skip-bad names each file it left out (a loop, a text file).
  cxr::testing::write_bytes(root / "val" / "COVID" / "notes.png", "text\n");
  const std::string train = "train " + root.string() +
                            " --size 16 --no-cache --filters 4,8 --epochs 1 "
                            "--batch-size 8 --device cpu --out " +
                            (dir / "run").string();
  EXPECT_EQ(run(train + "-refused", &log), 3) << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
  EXPECT_EQ(run(train + " --skip-bad", &log), 0) << log;
  EXPECT_TRUE(
      contains(log, "cxr: skipped '" + loop.string() + "' is a symlink loop"))
      << log;
  EXPECT_TRUE(
      contains(log, "cxr: skipped image '" +
                        (root / "val" / "COVID" / "notes.png").string() +
                        "': not a readable image"))
      << log;

  // predict: a folder holding a loop.
  const fs::path in = dir / "in";
  cxr::data::write_png((in / "a.png").string(), torch::rand({16, 16}));
  fs::create_symlink("b.png", in / "b.png");
  const std::string predict =
      "predict " + (dir / "run").string() + " " + in.string() + " --device cpu";
  EXPECT_EQ(run(predict, &log), 3) << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
  EXPECT_TRUE(contains(log, (in / "b.png").string() + "' is a symlink loop"))
      << log;
  run(predict + " --skip-bad", &log);
  EXPECT_TRUE(contains(
      log, "error: '" + (in / "b.png").string() + "' is a symlink loop"))
      << log;
  EXPECT_TRUE(contains(log, (in / "a.png").string() + "  ")) << log;

  // An unreadable class folder, as user nobody when the tests run as root.
  if (::geteuid() == 0 && ::access("/usr/bin/setpriv", X_OK) != 0) return;
  const std::string as_user =
      ::geteuid() == 0
          ? "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups "
          : "";
  fs::remove(loop);
  fs::remove(root / "val" / "COVID" / "notes.png");
  const fs::path locked = root / "val" / "Normal";
  fs::permissions(dir.path(), fs::perms::all);
  fs::permissions(locked, fs::perms::none);
  const std::string out = (dir / "explore2").string();
  const int rc = cxr::testing::run_command(
      as_user + bin + " explore " + root.string() +
          " --size 16 --no-cache --out " + out + " 2>&1",
      &log);
  fs::permissions(locked, fs::perms::owner_all);
  EXPECT_EQ(rc, 3) << log;
  EXPECT_EQ(count_of(log, "cxr: error"), 1) << log;
  EXPECT_TRUE(contains(log, "folder '" + locked.string() +
                                "' cannot be read (permission denied)"))
      << log;
}

}  // namespace
