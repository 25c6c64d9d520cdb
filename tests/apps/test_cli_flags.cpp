// The thin CLI's contract on bad input and odd output paths: a bad flag is
// exit 2 with one line "cxr: error: ..." naming it, before any file is read;
// --config errors name the file and key; config.json fields and model.pt
// weights are checked when a run is loaded; --csv/--json write through
// devices, FIFOs and symlinks; a log (stderr not a terminal) gets one plain
// line per epoch.
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/infer/run_config.h"
#include "cxr/models/weights_file.h"
#include "cxr/train/run.h"
#include "cxr/train/run_dir.h"
#include "cxr/tune/tune.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::testing::run_command;
using cxr::testing::TempDir;

const std::string kBin = CXR_BINARY;

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

/// Runs `cmd` and returns its exit code; `err` gets its stderr only
/// (run_command redirects 2>&1 after the whole command line).
int stderr_of(const std::string& cmd, std::string* err) {
  return run_command("(" + cmd + " >/dev/null)", err);
}

/// Runs cxr with `args`; expects exit `rc` and, as the whole output, one
/// line "cxr: error: ..." containing `needle`.
void expect_one_line_error(const std::string& args,
                           int rc,
                           const std::string& needle) {
  std::string log;
  EXPECT_EQ(run_command(kBin + " " + args, &log), rc) << args << "\n" << log;
  const auto lines = lines_of(log);
  ASSERT_EQ(lines.size(), 1u) << args << "\n" << log;
  EXPECT_EQ(lines[0].rfind("cxr: error: ", 0), 0u) << args << "\n" << log;
  EXPECT_NE(lines[0].find(needle), std::string::npos) << args << "\n" << log;
}

TEST(CliFlags, BadValuesAreRefusedWithOneLineBeforeReadingData) {
  // "nope" does not exist: exit 2 (not 3 or 4) shows the flag was checked
  // first.
  const std::vector<std::tuple<std::string, std::string>> cases = {
      {"evaluate nope --threshold -1", "--threshold"},
      {"evaluate nope --threshold nan", "--threshold"},
      {"predict nope x.png --threshold 1.5", "--threshold"},
      {"evaluate nope --target-sensitivity -1", "--target-sensitivity"},
      {"evaluate nope --target-sensitivity nan", "--target-sensitivity"},
      {"train nope --target-sensitivity -1", "--target-sensitivity"},
      {"train nope --target-sensitivity nan", "--target-sensitivity"},
      {"train nope --epochs 0", "--epochs"},
      {"train nope --seed -1", "--seed"},
      {"train nope --split-seed -1", "--split-seed"},
      {"train nope --momentum 0.5", "--optimizer sgd"},
      {"train nope --optimizer sgd --momentum -1", "--momentum"},
      {"train nope --weight-decay -1", "--weight-decay"},
      {"train nope --model foo", "baseline, mobilenetv2 or resnet50v2"},
      {"tune nope --model foo", "--model"},
      {"train nope --threads -1", "--threads"},
      {"explore nope --near-similarity 2", "--near-similarity"},
      {"explore nope --near-similarity nan", "--near-similarity"},
      {"explore nope --near-similarity 0", "--near-similarity"},
      {"train nope --train-fraction 1.5", "--train-fraction"},
      {"train nope --train-fraction 0", "--train-fraction"},
      {"explore nope --val-fraction nan", "--val-fraction"},
      {"tune nope --val-fraction -0.1", "--val-fraction"},
      // Unset means no limit; a typed budget must be one.
      {"tune nope --budget-minutes 0", "--budget-minutes"},
      {"tune nope --budget-minutes -1", "--budget-minutes"},
      {"tune nope --budget-minutes nan", "--budget-minutes"},
      {"train nope --no-such-flag", "cxr train --help"},
      {"train nope --epochs abc", "--epochs"},
      {"", "cxr --help"},
  };
  for (const auto& [args, needle] : cases) {
    expect_one_line_error(args, 2, needle);
  }
}

TEST(CliFlags, AnUnknownSubcommandIsNamed) {
  expect_one_line_error("nosuch", 2,
                        "cxr: error: unknown subcommand 'nosuch'; see cxr "
                        "--help");
  expect_one_line_error("--version-typo", 2, "cxr --help");
  // No subcommand at all: CLI11's message, still one line and exit 2.
  expect_one_line_error("", 2, "A subcommand is required; see cxr --help");
}

TEST(CliFlags, HelpAndVersionStillExitZero) {
  std::string log;
  EXPECT_EQ(run_command(kBin + " --version", &log), 0) << log;
  EXPECT_NE(log.find("cxr "), std::string::npos);
  EXPECT_EQ(run_command(kBin + " train --help", &log), 0) << log;
  EXPECT_NE(log.find("--epochs"), std::string::npos);
  EXPECT_EQ(run_command(kBin + " tune --help", &log), 0) << log;
  EXPECT_NE(log.find("(default: no limit)"), std::string::npos) << log;
}

TEST(CliFlags, TrainOptionsValidateRangesTorchWouldRejectLate) {
  auto refused = [](auto change) {
    cxr::train::TrainOptions o;
    change(o);
    EXPECT_THROW(o.validate(), cxr::ConfigError);
  };
  refused([](auto& o) { o.momentum = -1; });
  refused([](auto& o) { o.momentum = NAN; });
  refused([](auto& o) { o.weight_decay = -1; });
  refused([](auto& o) { o.weight_decay = NAN; });
  refused([](auto& o) { o.epochs = 0; });
  cxr::train::TrainOptions fine_tune_only;
  fine_tune_only.epochs = 0;
  fine_tune_only.fine_tune_epochs = 2;
  EXPECT_NO_THROW(fine_tune_only.validate());
}

TEST(CliFlags, ConfigFileErrorsNameTheFileAndKeyNotGrid) {
  TempDir dir;
  const std::string path = (dir / "space.json").string();
  cxr::testing::write_bytes(path, R"({"dropout": [0.1], "lr": ["abc"]})");
  try {
    cxr::tune::read_space_file(path);
    FAIL() << "expected ConfigError";
  } catch (const cxr::ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("--config " + path), std::string::npos) << m;
    EXPECT_NE(m.find("key \"lr\""), std::string::npos) << m;
    EXPECT_EQ(m.find("--grid"), std::string::npos) << m;
  }
  cxr::testing::write_bytes(path, R"({"nope": [1]})");
  expect_one_line_error("tune " + dir.path().string() + " --config " + path, 2,
                        "key \"nope\"");
  // --grid keeps naming its token.
  try {
    cxr::tune::parse_space({"lr=abc"});
    FAIL() << "expected ConfigError";
  } catch (const cxr::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--grid token 'lr=abc'"),
              std::string::npos)
        << e.what();
  }
}

TEST(CliFlags, TextOutputsFollowTheKindOfPath) {
  TempDir dir;
  // A regular file: replaced atomically, no temp file left.
  const fs::path file = dir / "a.csv";
  cxr::write_text_atomic(file, "one\n");
  cxr::write_text_atomic(file, "two\n");
  EXPECT_EQ(cxr::read_text(file), "two\n");
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
  // A symlink stays a symlink; its target gets the text.
  fs::create_symlink("a.csv", dir / "link.csv");
  cxr::write_text_atomic(dir / "link.csv", "three\n");
  EXPECT_TRUE(fs::is_symlink(dir / "link.csv"));
  EXPECT_EQ(cxr::read_text(file), "three\n");
  // A directory: IoError naming it.
  fs::create_directories(dir / "folder");
  try {
    cxr::write_text_atomic(dir / "folder", "x");
    FAIL() << "expected IoError";
  } catch (const cxr::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(fs::is_directory(dir / "folder"));
  // A character device is written through, not replaced.
  cxr::write_text_atomic("/dev/null", "x");
  EXPECT_TRUE(fs::is_character_file("/dev/null"));
}

/// One tiny trained run shared by the tests below.
class CliRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    cxr::testing::make_tiny_dataset(*dir_ / "data");
    cxr::train::RunOptions o;
    o.data.root = (*dir_ / "data").string();
    o.data.size = 16;
    o.model = cxr::testing::tiny_config();
    o.train = cxr::testing::tiny_train_options();
    o.train.epochs = 2;
    o.device = "cpu";
    o.out_dir = (*dir_ / "run").string();
    cxr::train::train_run(o);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string run() { return (*dir_ / "run").string(); }
  static std::string image() {
    for (const auto& e : fs::directory_iterator(*dir_ / "data/test/COVID")) {
      return e.path().string();
    }
    return "";
  }
  /// A copy of the run folder to damage.
  static std::string copy_run(const std::string& name) {
    const fs::path to = *dir_ / name;
    fs::remove_all(to);
    fs::copy(run(), to, fs::copy_options::recursive);
    return to.string();
  }
  static TempDir* dir_;
};
TempDir* CliRun::dir_ = nullptr;

// --threshold and --target-sensitivity are unset unless given (the run's
// threshold applies); a given value, 0 included, is the one used.
TEST_F(CliRun, AGivenThresholdIsUsedAndZeroIsAValue) {
  const fs::path json = *dir_ / "threshold.json";
  const std::string predict = kBin + " predict " + run() + " " + image() +
                              " --device cpu --json " + json.string();
  std::string log;
  ASSERT_EQ(run_command(predict, &log), 0) << log;
  const double run_threshold = cxr::read_json(json)["threshold"];
  ASSERT_EQ(run_command(predict + " --threshold 0", &log), 0) << log;
  auto j = cxr::read_json(json);
  EXPECT_EQ(j["threshold"], 0.0);
  EXPECT_EQ(j["predictions"][0]["decision"], "COVID") << j.dump();
  ASSERT_EQ(run_command(predict, &log), 0) << log;
  EXPECT_EQ(cxr::read_json(json)["threshold"], run_threshold);

  const std::string evaluate = kBin + " evaluate " + run() +
                               " --device cpu --bootstrap 100 --out " +
                               (*dir_ / "eval-threshold").string();
  ASSERT_EQ(run_command(evaluate + " --threshold 0", &log), 0) << log;
  const auto m = cxr::read_json(*dir_ / "eval-threshold" / "metrics.json");
  EXPECT_NE(m["threshold_rule"].get<std::string>().find("--threshold 0.0000"),
            std::string::npos)
      << m.dump();
  ASSERT_EQ(run_command(evaluate + " --target-sensitivity 1", &log), 0) << log;
  EXPECT_NE(cxr::read_json(*dir_ / "eval-threshold" /
                           "metrics.json")["threshold_rule"]
                .get<std::string>()
                .find("sensitivity"),
            std::string::npos);
}

TEST_F(CliRun, PredictCsvWritesThroughStdoutFifoAndSymlinks) {
  const std::string predict =
      kBin + " predict " + run() + " " + image() + " --device cpu";
  std::string out;
  // /dev/stdout: the CSV arrives on stdout (before the table).
  ASSERT_EQ(
      run_command("(" + predict + " --csv /dev/stdout 2>/dev/null)", &out), 0)
      << out;
  EXPECT_EQ(out.rfind("file,p_COVID", 0), 0u) << out;
  EXPECT_NE(out.find("decision"), std::string::npos) << out;
  // Redirected to a file, the CSV and the table do not overwrite each
  // other.
  const fs::path log = *dir_ / "stdout.txt";
  ASSERT_EQ(run_command(predict + " --csv /dev/stdout > " + log.string()), 0);
  const std::string logged = cxr::read_text(log);
  EXPECT_EQ(logged.rfind("file,p_COVID", 0), 0u) << logged;
  EXPECT_NE(logged.find("in-distribution"), std::string::npos) << logged;
  // A FIFO: written through to its reader, and still a FIFO.
  const fs::path fifo = *dir_ / "pipe";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const fs::path got = *dir_ / "from-pipe.csv";
  ASSERT_EQ(
      run_command("cat " + fifo.string() + " > " + got.string() + " & " +
                  predict + " --json " + fifo.string() + " >/dev/null; wait"),
      0);
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_NE(cxr::read_text(got).find("\"p_COVID\""), std::string::npos)
      << cxr::read_text(got);
  // A symlink: still a link, its target holds the CSV.
  cxr::testing::write_bytes(*dir_ / "target.csv", "old\n");
  fs::remove(*dir_ / "link.csv");
  fs::create_symlink(*dir_ / "target.csv", *dir_ / "link.csv");
  ASSERT_EQ(run_command(predict + " --csv " + (*dir_ / "link.csv").string()),
            0);
  EXPECT_TRUE(fs::is_symlink(*dir_ / "link.csv"));
  EXPECT_EQ(cxr::read_text(*dir_ / "target.csv").rfind("file,p_COVID", 0), 0u);
  // A directory: exit 5, one line naming it.
  fs::create_directories(*dir_ / "outdir");
  std::string log5;
  EXPECT_EQ(stderr_of(predict + " --csv " + (*dir_ / "outdir").string(), &log5),
            5)
      << log5;
  EXPECT_NE(log5.find("'" + (*dir_ / "outdir").string() +
                      "' is a directory; give a file path"),
            std::string::npos)
      << log5;
}

TEST_F(CliRun, ConfigJsonFieldsAreChecked) {
  struct Case {
    std::string pointer;
    nlohmann::json value;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"/threshold/value", 7, "threshold"},
      {"/model/input_size", 0, "model.input_size"},
      {"/model/dropout", 1.5, "model.dropout"},
      {"/data/size", -3, "data.size"},
      {"/ood/threshold", "high", "ood.threshold"},
  };
  for (const auto& c : cases) {
    const std::string r = copy_run("bad-config");
    const fs::path cfg = fs::path(r) / "config.json";
    auto j = cxr::read_json(cfg);
    j[nlohmann::json::json_pointer(c.pointer)] = c.value;
    cxr::write_json_atomic(cfg, j);
    std::string log;
    EXPECT_EQ(
        stderr_of(kBin + " predict " + r + " " + image() + " --device cpu",
                  &log),
        4)
        << c.pointer << "\n"
        << log;
    EXPECT_NE(log.find("config.json"), std::string::npos) << log;
    EXPECT_NE(log.find(c.needle), std::string::npos) << c.pointer << "\n"
                                                     << log;
  }
}

TEST_F(CliRun, NonFiniteWeightsAreACorruptModelNotADivergedRun) {
  const std::string r = copy_run("nan-weights");
  const auto cfg = cxr::infer::read_run_config(r);
  auto model = cxr::infer::load_model(r, cfg.model, torch::kCPU);
  {
    torch::NoGradGuard no_grad;
    model->parameters().front().fill_(NAN);
  }
  cxr::models::save_module_weights(
      (fs::path(r) / cxr::models::kWeightsFile).string(), *model,
      {{cxr::infer::kInputSizeKey, std::to_string(cfg.model.input_size)}});
  std::string log;
  EXPECT_EQ(
      stderr_of(kBin + " predict " + r + " " + image() + " --device cpu", &log),
      4)
      << log;
  EXPECT_NE(log.find("holds non-finite weights (NaN/Inf)"), std::string::npos)
      << log;
  EXPECT_EQ(log.find("lower --lr"), std::string::npos) << log;
}

/// A copy of the fixture's data with one unreadable test image; returns
/// the data folder and sets `bad` to that image.
fs::path data_with_a_bad_test_image(const fs::path& dir, std::string* bad) {
  const fs::path data = dir / "data-bad";
  fs::remove_all(data);
  fs::copy(dir / "data", data, fs::copy_options::recursive);
  for (const auto& e : fs::directory_iterator(data / "test/Normal")) {
    cxr::testing::write_bytes(e.path(), "not a png");
    *bad = e.path().string();
    break;
  }
  return data;
}

TEST_F(CliRun, CalibrateDoesNotSuggestAFlagItLacks) {
  std::string bad;
  const fs::path data = data_with_a_bad_test_image(dir_->path(), &bad);
  std::string log;
  EXPECT_EQ(stderr_of(kBin + " calibrate " + copy_run("cal-bad") + " --data " +
                          data.string() + " --no-cache --device cpu",
                      &log),
            3)
      << log;
  EXPECT_EQ(log.find("pass --skip-bad"), std::string::npos) << log;
  EXPECT_NE(log.find("cxr calibrate scores every image"), std::string::npos)
      << log;
}

TEST_F(CliRun, EvaluateAndExplainSkipBadImagesOfASplitWhenAsked) {
  std::string bad;
  const fs::path data = data_with_a_bad_test_image(dir_->path(), &bad);
  const std::string r = copy_run("skip-bad");
  const std::string tail =
      " --data " + data.string() + " --no-cache --device cpu";
  for (const std::string cmd :
       {"evaluate " + r, "explain " + r + " --split test"}) {
    // Without --skip-bad: exit 3, naming the image and the flag.
    std::string log;
    EXPECT_EQ(stderr_of(kBin + " " + cmd + tail, &log), 3) << cmd << "\n"
                                                           << log;
    EXPECT_NE(log.find(bad), std::string::npos) << log;
    EXPECT_NE(log.find("pass --skip-bad"), std::string::npos) << log;
    // With it: the rest is scored and the image is listed on stderr.
    EXPECT_EQ(stderr_of(kBin + " " + cmd + tail + " --skip-bad", &log), 0)
        << cmd << "\n"
        << log;
    int listed = 0;
    for (const auto& line : lines_of(log)) {
      listed += line.rfind("cxr: skipped ", 0) == 0 &&
                line.find(bad) != std::string::npos;
    }
    EXPECT_EQ(listed, 1) << log;
  }
  // ... and recorded where the results are.
  const auto m = cxr::read_json(fs::path(r) / "eval-test" / "metrics.json");
  ASSERT_EQ(m["skipped"].size(), 1u) << m["skipped"];
  EXPECT_EQ(m["skipped"][0]["file"], bad);
  EXPECT_EQ(m["skipped"][0]["split"], "test");
  EXPECT_FALSE(m["skipped"][0]["reason"].get<std::string>().empty());
  int64_t test_images = 0;
  for (const auto& c : {"COVID", "Normal"}) {
    for (const auto& e : fs::directory_iterator(data / "test" / c)) {
      test_images += e.is_regular_file() ? 1 : 0;
    }
  }
  EXPECT_EQ(m["n"].get<int64_t>(), test_images - 1);
  const auto s = cxr::read_json(fs::path(r) / "explain" / "summary.json");
  ASSERT_EQ(s["skipped"].size(), 1u) << s;
  EXPECT_EQ(s["skipped"][0]["file"], bad);
  EXPECT_EQ(s["images"].get<int64_t>(), test_images - 1);
  EXPECT_NE(cxr::read_text(fs::path(r) / "explain" / "index.html").find(bad),
            std::string::npos);
  // Image files, not a split: --skip-bad is refused, not ignored.
  expect_one_line_error("explain " + r + " " + image() + " --skip-bad", 2,
                        "--skip-bad applies to --split");
  expect_one_line_error("evaluate " + r + " --ood-sets --skip-bad", 2,
                        "--skip-bad does not apply to --ood-sets");
}

TEST_F(CliRun, CommandsThatWriteIntoARunTakeItsLock) {
  const std::string r = copy_run("locked");
  const cxr::train::DirLock held(r);  // as a train of this run would
  const std::string tail = " --no-cache --device cpu";
  expect_one_line_error("calibrate " + r + tail, 5,
                        "is in use by another cxr process");
  expect_one_line_error("evaluate " + r + tail, 5,
                        "is in use by another cxr process");
  expect_one_line_error("evaluate " + r + " --out " + r + "/mine" + tail, 5,
                        "is in use by another cxr process");
  expect_one_line_error("explain " + r + " --split test" + tail, 5,
                        "is in use by another cxr process");
  EXPECT_FALSE(fs::exists(fs::path(r) / "eval-test"));
  // Writing elsewhere only reads the run: no lock needed.
  std::string log;
  EXPECT_EQ(stderr_of(kBin + " evaluate " + r + " --split val --out " +
                          (*dir_ / "elsewhere").string() + tail,
                      &log),
            0)
      << log;
}

TEST(CliLog, TrainWritesOnePlainLinePerEpochWhenStderrIsAFile) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const fs::path log = dir / "train.log";
  ASSERT_EQ(run_command("(" + kBin + " train " + (dir / "data").string() +
                        " --size 16 --filters 4,8 --epochs 3 --patience 0 "
                        "--batch-size 8 --no-cache --device cpu --out " +
                        (dir / "run").string() + " >/dev/null 2>" +
                        log.string() + ")"),
            0)
      << cxr::read_text(log);
  const std::string text = cxr::read_text(log);
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  int epochs = 0;
  for (const auto& line : lines_of(text)) {
    if (line.rfind("train epoch ", 0) != 0) continue;
    ++epochs;
    EXPECT_EQ(
        line.rfind("train epoch " + std::to_string(epochs) + "/3: loss ", 0),
        0u)
        << line;
    EXPECT_EQ(line.find('['), std::string::npos) << line;
  }
  EXPECT_EQ(epochs, 3) << text;
}

TEST(CliLog, TuneWritesOnePlainLinePerEpochOfEachTrialWhenStderrIsAFile) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const fs::path log = dir / "tune.log";
  ASSERT_EQ(run_command("(" + kBin + " tune " + (dir / "data").string() +
                        " --grid lr=1e-2,1e-3 --size 16 --filters 4,8 "
                        "--epochs 2 --patience 0 --batch-size 8 --no-cache "
                        "--device cpu --out " +
                        (dir / "tune").string() + " >/dev/null 2>" +
                        log.string() + ")"),
            0)
      << cxr::read_text(log);
  const std::string text = cxr::read_text(log);
  EXPECT_EQ(text.find('\r'), std::string::npos) << text;
  std::vector<std::string> epochs;
  for (const auto& line : lines_of(text)) {
    if (line.rfind("trial ", 0) != 0 ||
        line.find(" epoch ") == std::string::npos) {
      continue;
    }
    epochs.push_back(line.substr(0, line.find(':')));
    EXPECT_NE(line.find(": loss "), std::string::npos) << line;
  }
  EXPECT_EQ(epochs,
            (std::vector<std::string>{
                "trial 1/2 train epoch 1/2", "trial 1/2 train epoch 2/2",
                "trial 2/2 train epoch 1/2", "trial 2/2 train epoch 2/2"}))
      << text;
}

}  // namespace
