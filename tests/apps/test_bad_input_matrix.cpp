// The bad-input matrix: every kind of bad input a user (or a network peer,
// once `cxr serve` exists) can hand the CLI, across the subcommands. Each row
// asserts the documented exit code and that the whole output is ONE line
// "cxr: error: ..." naming the flag or file at fault. Flag-range rows that
// only need parsing live in test_cli_flags.cpp; this matrix covers files,
// folders, run folders and outputs as well, with a tiny dataset and a tiny
// trained run made once per process.
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "cxr/common/fs.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::testing::run_command;
using cxr::testing::TempDir;
using cxr::testing::write_bytes;

const std::string kBin = CXR_BINARY;

std::string q(const fs::path& p) {
  return "'" + p.string() + "'";
}

/// A tiny dataset, one trained run and a set of bad files, made once.
struct Fixture {
  TempDir dir;
  fs::path data = dir / "data";
  fs::path run = dir / "run";
  fs::path bad = dir / "bad";
  std::string train_log;
  int train_rc = -1;

  Fixture() {
    cxr::testing::make_tiny_dataset(data);
    train_rc = run_command(kBin + " train " + q(data) + " --out " + q(run) +
                               " --size 16 --filters 4,8 --epochs 2"
                               " --batch-size 8 --no-cache --quiet",
                           &train_log);
    fs::create_directories(bad);
    // A real PNG to cut and corrupt.
    const fs::path good =
        fs::directory_iterator(data / "test" / "COVID")->path();
    std::ifstream in(good, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    const std::string png = s.str();
    write_bytes(bad / "empty.png", "");
    write_bytes(bad / "text.png", "this is not an image\n");
    write_bytes(bad / "truncated.png", png.substr(0, png.size() / 2));
    std::string crc = png;
    crc[crc.size() - 20] ^= 0x55;  // inside the IDAT or its CRC
    write_bytes(bad / "crc.png", crc);
    // A JPEG cut after its header: SOI, a JFIF APP0, then nothing.
    write_bytes(bad / "truncated.jpg",
                std::string("\xFF\xD8\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00"
                            "\x00\x01\x00\x01\x00\x00",
                            20));
    // A PNG header claiming 100000 x 100000 pixels (IHDR only).
    std::string huge = png.substr(0, 33);
    for (int k : {16, 20}) {
      huge[static_cast<size_t>(k)] = 0x00;
      huge[static_cast<size_t>(k) + 1] = 0x01;
      huge[static_cast<size_t>(k) + 2] = static_cast<char>(0x86);
      huge[static_cast<size_t>(k) + 3] = static_cast<char>(0xA0);
    }
    write_bytes(bad / "huge.png", huge);
    write_bytes(bad / "notes.txt", "hello\n");
    fs::create_directories(bad / "empty-folder");
    write_bytes(bad / "a-file", "x");
    // Broken run folders.
    fs::create_directories(bad / "not-a-run");
    copy_run("no-model");
    fs::remove(bad / "no-model" / "model.safetensors");
    copy_run("corrupt-model");
    write_bytes(bad / "corrupt-model" / "model.safetensors", "garbage");
    copy_run("bad-json");
    write_bytes(bad / "bad-json" / "config.json", "{ not json");
    copy_run("threshold-7");
    auto cfg = cxr::read_json(bad / "threshold-7" / "config.json");
    cfg["threshold"] = 7;
    write_bytes(bad / "threshold-7" / "config.json", cfg.dump());
    copy_run("no-ood");
    fs::remove(bad / "no-ood" / "ood.safetensors");
    write_bytes(bad / "space-bad.json", "{\"lr\": [\"abc\"]}");
    write_bytes(bad / "space-broken.json", "{\"lr\": [0.1,");
    write_bytes(bad / "weights.h5", "not an HDF5 file");
  }

  void copy_run(const std::string& name) {
    fs::copy(run, bad / name, fs::copy_options::recursive);
  }
};

const Fixture& fixture() {
  static Fixture f;
  return f;
}

/// `env` without torchrun's variables or our launcher's marker, so that a
/// row's own variables (if any) are the only ones the command sees.
std::string clean_env() {
  return "env -u RANK -u WORLD_SIZE -u LOCAL_RANK -u LOCAL_WORLD_SIZE "
         "-u GROUP_RANK -u MASTER_ADDR -u MASTER_PORT -u CXR_DIST_WORKER ";
}

struct Row {
  std::string args;  ///< after "cxr "
  int rc;
  std::string needle;  ///< must appear in the one line
};

/// `prefix` goes before the binary (an environment, a time limit).
void check(const Row& r, const std::string& prefix = "") {
  std::string log;
  const int rc = run_command(prefix + kBin + " " + r.args, &log);
  EXPECT_EQ(rc, r.rc) << r.args << "\n" << log;
  std::vector<std::string> lines;
  std::istringstream in(log);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 1u) << r.args << "\n" << log;
  EXPECT_EQ(lines[0].rfind("cxr: error: ", 0), 0u) << r.args << "\n" << log;
  EXPECT_NE(lines[0].find(r.needle), std::string::npos)
      << r.args << "\n"
      << log << "(expected to name: " << r.needle << ")";
}

TEST(BadInputMatrix, FortyKindsAcrossTheSubcommands) {
  const Fixture& f = fixture();
  ASSERT_EQ(f.train_rc, 0) << f.train_log;
  const std::string d = q(f.data), run = q(f.run);
  const fs::path& b = f.bad;
  const std::string out = " --out " + q(f.dir / "out");
  const std::vector<Row> rows = {
      // --- data roots and folders (exit 3) ---
      {"explore " + q(b / "missing") + out, 3, "missing"},
      {"explore " + q(b / "a-file") + out, 3, "a-file"},
      {"explore " + q(b / "empty-folder") + out, 3, "empty-folder"},
      {"train " + q(b / "missing") + out, 3, "missing"},
      {"tune " + q(b / "a-file") + out, 3, "a-file"},
      // --- image files (exit 3, naming the file) ---
      {"predict " + run + " " + q(b / "empty.png"), 3, "empty.png"},
      {"predict " + run + " " + q(b / "text.png"), 3, "text.png"},
      {"predict " + run + " " + q(b / "truncated.png"), 3, "truncated.png"},
      {"predict " + run + " " + q(b / "crc.png"), 3, "crc.png"},
      {"predict " + run + " " + q(b / "truncated.jpg"), 3, "truncated.jpg"},
      {"predict " + run + " " + q(b / "huge.png"), 3, "megapixels"},
      {"predict " + run + " " + q(b / "missing.png"), 3, "missing.png"},
      {"predict " + run + " " + q(b / "empty-folder"), 3, "empty-folder"},
      {"predict " + run + " " + q(b / "notes.txt"), 3, "notes.txt"},
      {"explain " + run + " " + q(b / "crc.png") + out, 3, "crc.png"},
      // --- run folders (exit 4, naming the run or file) ---
      {"predict " + q(b / "missing-run") + " " + q(b / "crc.png"), 4,
       "missing-run"},
      {"predict " + q(b / "not-a-run") + " x.png", 4, "not-a-run"},
      {"evaluate " + q(b / "no-model"), 4, "model.safetensors"},
      {"evaluate " + q(b / "corrupt-model"), 4, "model.safetensors"},
      {"evaluate " + q(b / "bad-json"), 4, "config.json"},
      {"evaluate " + q(b / "threshold-7"), 4, "threshold"},
      {"predict " + q(b / "no-ood") + " x.png", 4, "ood.safetensors"},
      {"explain " + q(b / "corrupt-model") + " x.png", 4, "model.safetensors"},
      {"calibrate " + q(b / "not-a-run"), 4, "not-a-run"},
      {"report " + q(b / "empty-folder") + out, 3, "empty-folder"},
      // --- flags that need a run or data to be judged (exit 2) ---
      {"evaluate " + run + " --split nope", 2, "--split"},
      {"explain " + run + " --layer nope x.png", 2, "--layer"},
      {"explain " + run + " --split nope", 2, "--split"},
      {"evaluate " + run + " --bootstrap -5", 2, "--bootstrap"},
      {"explain " + run + " --limit -1 x.png", 2, "--limit"},
      {"explain " + run + " --batch-size 0 x.png", 2, "--batch-size"},
      {"tune " + d + " --grid lr=abc" + out, 2, "--grid"},
      {"tune " + d + " --grid nonsense" + out, 2, "--grid"},
      {"tune " + d + " --config " + q(b / "space-bad.json") + out, 2,
       "space-bad.json"},
      {"tune " + d + " --config " + q(b / "space-broken.json") + out, 2,
       "space-broken.json"},
      {"tune " + d + " --config " + q(b / "missing.json") + out, 2,
       "missing.json"},
      {"tune " + d + " --mode nope" + out, 2, "--mode"},
      {"tune " + d + " --metric nope" + out, 2, "--metric"},
      {"train " + d + " --optimizer nope" + out, 2, "--optimizer"},
      {"train " + d + " --schedule nope" + out, 2, "--schedule"},
      {"train " + d + " --keep nope" + out, 2, "--keep"},
      {"train " + d + " --train-on nope" + out, 2, "--train-on"},
      {"train " + d + " --size 0" + out, 2, "--size"},
      {"train " + d + " --batch-size 0" + out, 2, "--batch-size"},
      {"train " + d + " --lr 0" + out, 2, "--lr"},
      {"train " + d + " --dropout 1.5" + out, 2, "--dropout"},
      {"train " + d + " --device tpu" + out, 2, "--device"},
      {"train " + d + " --model mobilenetv2 --weights " + q(b / "weights.h5") +
           out,
       4, "weights.h5"},
      // --- the study checks what it needs before its first step ---
      {"study --data " + q(b / "missing") + out, 3, "missing"},
      {"study --data " + d + " --weights " + q(b / "weights.h5") + out, 4,
       "weights.h5"},
      {"study --data " + d + " --weights " + q(b / "weights.h5") +
           " --no-weights" + out,
       2, "--no-weights"},
      // --- run folders that must not be mixed up ---
      {"train " + d + " --out " + run + " --size 16 --filters 4,8", 2,
       "--overwrite"},
      {"train " + d + " --out " + run + " --resume", 2, "--resume"},
      // --- outputs (exit 5) ---
      {"predict " + run + " " + q(f.data / "test") + " --csv " +
           q(b / "empty-folder"),
       5, "empty-folder"},
      {"predict " + run + " " + q(f.data / "test") + " --json " +
           q(b / "empty-folder"),
       5, "empty-folder"},
  };
  EXPECT_GE(rows.size(), 40u);
  for (const auto& r : rows) check(r);
}

/// `train` of the fixture's data into DIR/`out`: one tiny epoch, each
/// rendezvous bounded by --dist-timeout `timeout_s` (ends with a space).
std::string tiny_train(const Fixture& f,
                       const std::string& out,
                       int timeout_s) {
  return "train " + q(f.data) + " --out " + q(f.dir / out) +
         " --size 16 --filters 4,8 --epochs 1 --quiet --no-cache"
         " --dist-timeout " +
         std::to_string(timeout_s) + " ";
}

// The launcher's flags (apps/cxr/launch.cpp), refused while parsing or
// before any worker starts. Each run is bounded by timeout(1): a value that
// slipped through to a rendezvous would wait, and exit 124 here, not hang.
// Before the host check, --master-addr '' ran the job on 127.0.0.1 and
// 'bad host name!' waited for the rendezvous until --dist-timeout.
TEST(BadInputMatrix, LauncherFlagsWithBadValues) {
  const Fixture& f = fixture();
  ASSERT_EQ(f.train_rc, 0) << f.train_log;
  const std::string train = tiny_train(f, "launched", 5);
  const std::string predict =
      "predict " + q(f.run) + " " + q(f.data / "test") + " --dist-timeout 5 ";
  // Rows from (command, flag, values): each exits 2 naming the flag.
  std::vector<Row> rows;
  auto bad = [&](const std::string& command, const std::string& flag,
                 const std::vector<std::string>& values) {
    for (const auto& v : values)
      rows.push_back({command + flag + " " + v, 2, flag});
  };
  bad(train, "--nnodes", {"0", "-1", "x", "4097"});
  bad(train, "--node-rank", {"-1"});
  bad(train + "--nproc 2 ", "--master-addr", {"''", "'bad host name!'"});
  bad(train + "--nnodes 2 ", "--master-addr", {"'node0;rm'"});
  bad(train, "--master-port", {"0", "70000", "-1", "http"});
  bad(train, "--nproc", {"0", "-2", "257", "two"});
  bad(train, "--dist-timeout", {"0", "-5", "nan"});
  bad(predict, "--nnodes", {"0"});
  bad(predict + "--nproc 2 ", "--master-addr", {"''"});
  bad("evaluate " + q(f.run) + " ", "--master-port", {"70000"});
  bad("tune " + q(f.data) + " --out " + q(f.dir / "t") + " ", "--nproc", {"0"});
  // The node rank against --nnodes, and a second node without the master.
  rows.push_back({train + "--nnodes 2 --node-rank 2 --master-addr 127.0.0.1", 2,
                  "--node-rank 2"});
  rows.push_back({train + "--node-rank 1", 2, "--node-rank 1"});
  rows.push_back({train + "--nnodes 2 --node-rank 1", 2, "--master-addr"});
  EXPECT_EQ(rows.size(), 26u);
  for (const auto& r : rows) check(r, "timeout 60 " + clean_env());
}

// --precision is checked while parsing in every command that runs a model.
TEST(BadInputMatrix, PrecisionFooIsRefusedByEveryCommand) {
  const Fixture& f = fixture();
  ASSERT_EQ(f.train_rc, 0) << f.train_log;
  const std::string out = " --out " + q(f.dir / "precision");
  const std::vector<Row> rows = {
      {"train " + q(f.data) + out + " --precision foo", 2, "--precision"},
      {"predict " + q(f.run) + " " + q(f.data / "test") + " --precision foo", 2,
       "--precision"},
      {"evaluate " + q(f.run) + " --precision foo", 2, "--precision"},
      {"study --data " + q(f.data) + out + " --precision foo", 2,
       "--precision"},
      {"train " + q(f.data) + out + " --precision", 2, "--precision"},
      {"evaluate " + q(f.run) + " --precision FP32x", 2, "--precision"},
  };
  for (const auto& r : rows) check(r, "timeout 60 " + clean_env());
}

// A rank started by a scheduler (torchrun's environment) with a malformed
// variable exits 2 at once with one line naming it, before it waits for a
// rendezvous (timeout(1) turns a wait into exit 124). Before the checks in
// launch.cpp, WORLD_SIZE=0 and WORLD_SIZE=1 RANK=1 trained as one process,
// a missing MASTER_ADDR waited for 127.0.0.1 and MASTER_ADDR='bad host!'
// failed with exit 5 after --dist-timeout.
TEST(BadInputMatrix, SchedulerEnvironmentThatIsMalformed) {
  const Fixture& f = fixture();
  ASSERT_EQ(f.train_rc, 0) << f.train_log;
  const std::string train = tiny_train(f, "scheduled", 30);
  const std::string ok = "MASTER_ADDR=127.0.0.1 MASTER_PORT=29999 ";
  struct EnvRow {
    std::string vars;
    std::string needle;
  };
  const std::vector<EnvRow> rows = {
      {"WORLD_SIZE=abc RANK=0 " + ok, "WORLD_SIZE=abc"},
      {"WORLD_SIZE=0 RANK=0 " + ok, "WORLD_SIZE=0"},
      {"WORLD_SIZE=-2 RANK=0 " + ok, "WORLD_SIZE=-2"},
      {"WORLD_SIZE=2 RANK=-1 " + ok, "RANK=-1"},
      {"WORLD_SIZE=2 RANK=2 " + ok, "RANK 2"},
      {"WORLD_SIZE=1 RANK=1 " + ok, "RANK 1"},
      {"WORLD_SIZE=2 RANK=x " + ok, "RANK=x"},
      {"WORLD_SIZE=2 RANK=1 LOCAL_RANK=x " + ok, "LOCAL_RANK=x"},
      {"WORLD_SIZE=2 RANK=1 LOCAL_RANK=-1 " + ok, "LOCAL_RANK=-1"},
      {"WORLD_SIZE=2 RANK=1 LOCAL_WORLD_SIZE=0 " + ok, "LOCAL_WORLD_SIZE=0"},
      // The local ranks against the node and the job: before these checks
      // the first four waited for a rendezvous, the last trained alone.
      {"WORLD_SIZE=2 RANK=1 LOCAL_RANK=2 LOCAL_WORLD_SIZE=2 " + ok,
       "LOCAL_RANK=2 is outside 0..1 (LOCAL_WORLD_SIZE=2)"},
      {"WORLD_SIZE=4 RANK=3 LOCAL_RANK=3 LOCAL_WORLD_SIZE=2 " + ok,
       "LOCAL_RANK=3 is outside 0..1 (LOCAL_WORLD_SIZE=2)"},
      {"WORLD_SIZE=2 RANK=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=3 " + ok,
       "LOCAL_WORLD_SIZE=3 is larger than WORLD_SIZE=2"},
      {"WORLD_SIZE=2 RANK=1 LOCAL_RANK=2 " + ok,
       "LOCAL_RANK=2 is outside 0..1 (WORLD_SIZE=2)"},
      {"WORLD_SIZE=1 RANK=0 LOCAL_RANK=1 LOCAL_WORLD_SIZE=1 " + ok,
       "LOCAL_RANK=1 is outside 0..0 (LOCAL_WORLD_SIZE=1)"},
      {"WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=notaport",
       "MASTER_PORT=notaport"},
      {"WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=70000",
       "MASTER_PORT=70000"},
      {"WORLD_SIZE=2 RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=0",
       "MASTER_PORT=0"},
      {"WORLD_SIZE=2 RANK=1 MASTER_PORT=29999", "MASTER_ADDR"},
      {"WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29999", "RANK"},
      {"WORLD_SIZE=2 RANK=1 MASTER_ADDR='bad host!' MASTER_PORT=29999",
       "MASTER_ADDR='bad host!'"},
  };
  for (const auto& r : rows) {
    check({train, 2, r.needle}, "timeout 60 " + clean_env() + r.vars + " ");
  }
  EXPECT_FALSE(fs::exists(f.dir / "scheduled"));
}

// cxr serve's numeric flags: out of range, negative or not a number, each
// refused while parsing (exit 2, one line naming the flag) before any run is
// loaded or port bound. --port 0 is valid (any free port), so not a row.
TEST(BadInputMatrix, ServeFlagsOutOfRangeOrNotANumber) {
  const Fixture& f = fixture();
  ASSERT_EQ(f.train_rc, 0) << f.train_log;
  const std::string serve = "serve " + q(f.run) + " --exit-after 5 ";
  const std::vector<Row> rows = {
      {serve + "--port -1", 2, "--port"},
      {serve + "--port 70000", 2, "--port"},
      {serve + "--port 65536", 2, "--port"},
      {serve + "--port abc", 2, "--port"},
      {serve + "--port 80.5", 2, "--port"},
      {serve + "--port", 2, "--port"},
      {serve + "--queue 0", 2, "--queue"},
      {serve + "--queue -3", 2, "--queue"},
      {serve + "--queue 100001", 2, "--queue"},
      {serve + "--queue many", 2, "--queue"},
      {serve + "--deadline 0", 2, "--deadline"},
      {serve + "--deadline -1", 2, "--deadline"},
      {serve + "--deadline 86401", 2, "--deadline"},
      {serve + "--deadline nan", 2, "--deadline"},
      {serve + "--deadline soon", 2, "--deadline"},
      {serve + "--max-body-mb 0", 2, "--max-body-mb"},
      {serve + "--max-body-mb -8", 2, "--max-body-mb"},
      {serve + "--max-body-mb 5000", 2, "--max-body-mb"},
      {serve + "--max-body-mb big", 2, "--max-body-mb"},
      {"serve " + q(f.run) + " --exit-after -1", 2, "--exit-after"},
      {"serve " + q(f.run) + " --exit-after inf", 2, "--exit-after"},
      {"serve " + q(f.run) + " --exit-after later", 2, "--exit-after"},
      {serve + "--http-threads 0", 2, "--http-threads"},
      {serve + "--http-threads 257", 2, "--http-threads"},
      {serve + "--threads -1", 2, "--threads"},
      // Not a range, but a flag judged before binding: a public address
      // without --token.
      {serve + "--host 0.0.0.0", 2, "--token"},
  };
  for (const auto& r : rows) check(r);
}

}  // namespace
