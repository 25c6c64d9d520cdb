// model.safetensors: the safetensors layout exactly (so outside tools read
// it), round trips bit for bit, and a hostile or mismatched file is one
// ModelError naming the file (and the tensor), never a crash or an
// allocation the file does not hold.
#include "cxr/models/weights_file.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/infer/run_config.h"
#include "cxr/models/baseline.h"
#include "cxr/train/run_dir.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace cxr::testing;

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

/// A file from a header text and data bytes, as a hostile writer would.
std::string file_of(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

/// A module holding a float parameter [2, 3] named "w" and an int64 buffer
/// "n" [1] (the kinds a BatchNorm has).
struct Small : torch::nn::Module {
  Small() {
    w = register_parameter("w", torch::zeros({2, 3}));
    n = register_buffer("n", torch::zeros({1}, torch::kInt64));
  }
  torch::Tensor w, n;
};

/// The error `path` gives when loaded into Small (one line, naming it).
std::string load_error(const fs::path& path) {
  Small m;
  const auto e = error_of<cxr::ModelError>(
      [&] { cxr::models::load_module_weights(path.string(), m, "fix it"); });
  EXPECT_TRUE(contains(e, "'" + path.string() + "'")) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_TRUE(contains(e, "; fix it")) << e;
  // A refused file leaves the module as it was.
  EXPECT_TRUE(torch::equal(m.w, torch::zeros({2, 3})));
  return e;
}

// 24 bytes of w (6 floats) then 8 of n: a valid file's data.
std::string small_data() {
  std::string d(32, '\0');
  const float w[6] = {1, 2, 3, 4, 5, 6};
  const int64_t n = 7;
  std::memcpy(d.data(), w, 24);
  std::memcpy(d.data() + 24, &n, 8);
  return d;
}

const char* kSmallHeader =
    R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
    R"("n":{"dtype":"I64","shape":[1],"data_offsets":[24,32]}})";

TEST(WeightsFile, IsTheSafetensorsLayout) {
  TempDir dir;
  Small m;
  {
    torch::NoGradGuard g;
    m.w.copy_(torch::arange(6, torch::kFloat32).reshape({2, 3}));
    m.n.fill_(42);
  }
  const auto p = dir / "m.safetensors";
  cxr::models::save_module_weights(p.string(), m, {{"cxr_input_size", "32"}});
  const std::string bytes = read_text(p);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  // The data starts 8-byte aligned (header padded with spaces).
  EXPECT_EQ((8 + n) % 8, 0u);
  const auto header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["w"]["dtype"], "F32");
  EXPECT_EQ(header["w"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(header["n"]["dtype"], "I64");
  EXPECT_EQ(header["__metadata__"]["cxr_input_size"], "32");
  // Offsets relative to the end of the header; raw little-endian values.
  const auto off = header["w"]["data_offsets"].get<std::vector<uint64_t>>();
  ASSERT_EQ(off.at(1) - off.at(0), 24u);
  float w[6];
  std::memcpy(w, bytes.data() + 8 + n + off[0], 24);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(w[i], float(i));
  const auto noff = header["n"]["data_offsets"].get<std::vector<uint64_t>>();
  int64_t count = 0;
  std::memcpy(&count, bytes.data() + 8 + n + noff[0], 8);
  EXPECT_EQ(count, 42);
  EXPECT_EQ(bytes.size(), 8 + n + 32);

  Small back;
  const auto meta =
      cxr::models::load_module_weights(p.string(), back, "unused");
  EXPECT_TRUE(torch::equal(back.w, m.w));
  EXPECT_TRUE(torch::equal(back.n, m.n));
  EXPECT_EQ(meta.at("cxr_input_size"), "32");
}

TEST(WeightsFile, AHandWrittenFileInAnyDataOrderLoads) {
  TempDir dir;
  // n's data first, w's after: safetensors allows any order.
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},)"
      R"("n":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})";
  const std::string d = small_data();
  cxr::testing::write_bytes(dir / "a",
                            file_of(header, d.substr(24) + d.substr(0, 24)));
  Small m;
  cxr::models::load_module_weights((dir / "a").string(), m, "x");
  EXPECT_EQ(m.w[1][2].item<float>(), 6.0f);
  EXPECT_EQ(m.n[0].item<int64_t>(), 7);
}

TEST(WeightsFile, HostileFilesAreOneLineModelErrors) {
  TempDir dir;
  const std::string d = small_data();
  struct Case {
    std::string name, bytes, expect;
  };
  const std::vector<Case> cases = {
      {"empty", "", "not a safetensors weights file (0 bytes)"},
      {"short", "abc", "(3 bytes)"},
      {"length-beyond-file", le64(1000) + "{}", "header of 1000 bytes"},
      {"length-huge", le64(~uint64_t(0)) + "{}", "header of"},
      {"not-json", file_of("{nope", ""), "header:"},
      {"not-object", file_of("[1,2]", ""), "not a JSON object"},
      {"deep", file_of(R"({"a":[[[[[[1]]]]]]})", ""), "deeper than 4"},
      {"duplicate",
       file_of(
           std::string(kSmallHeader).substr(0, strlen(kSmallHeader) - 1) +
               R"(,"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
           d),
       "names 'w' twice"},
      {"missing",
       file_of(R"({"w":{"dtype":"F32","shape":[2,3],)"
               R"("data_offsets":[0,24]}})",
               d.substr(0, 24)),
       "does not match the model: it lacks tensor 'n'"},
      {"extra",
       file_of(
           std::string(kSmallHeader).substr(0, strlen(kSmallHeader) - 1) +
               R"(,"x\nevil":{"dtype":"U8","shape":[1],"data_offsets":[32,33]}})",
           d + "z"),
       "it holds tensor 'x?evil', which the model lacks"},
      {"dtype",
       file_of(R"({"w":{"dtype":"F64","shape":[2,3],"data_offsets":[0,48]},)"
               R"("n":{"dtype":"I64","shape":[1],"data_offsets":[48,56]}})",
               std::string(48, '\0') + d.substr(24)),
       "tensor 'w' is F64, the model needs F32"},
      {"shape",
       file_of(R"({"w":{"dtype":"F32","shape":[3,2],"data_offsets":[0,24]},)"
               R"("n":{"dtype":"I64","shape":[1],"data_offsets":[24,32]}})",
               d),
       "tensor 'w' is [3, 2], the model needs [2, 3]"},
      {"unknown-dtype",
       file_of(R"({"w":{"dtype":"F128","shape":[2,3],"data_offsets":[0,24]}})",
               d.substr(0, 24)),
       "unknown dtype"},
      {"negative-shape",
       file_of(R"({"w":{"dtype":"F32","shape":[-2,3],"data_offsets":[0,24]}})",
               d.substr(0, 24)),
       "bad shape"},
      {"huge-shape",
       file_of(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],)"
               R"("data_offsets":[0,24]}})",
               d.substr(0, 24)),
       "bad shape"},
      {"wrong-byte-count",
       file_of(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})",
               d.substr(0, 20)),
       "of 24 bytes whose data_offsets span 20"},
      {"extra-field",
       file_of(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24],)"
               R"("x":1}})",
               d.substr(0, 24)),
       "malformed entry"},
      {"overlap",
       file_of(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
               R"("n":{"dtype":"I64","shape":[1],"data_offsets":[16,24]}})",
               d.substr(0, 24)),
       "overlapping tensors at byte 16"},
      {"gap",
       file_of(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[8,32]},)"
               R"("n":{"dtype":"I64","shape":[1],"data_offsets":[40,48]}})",
               std::string(48, '\0')),
       "gap between tensors at byte 8"},
      {"truncated", file_of(kSmallHeader, d.substr(0, 30)),
       "holds 30 bytes of tensor data but its header accounts for 32"},
      {"padded", file_of(kSmallHeader, d + "xx"), "holds 34 bytes"},
      {"offsets-reversed",
       file_of(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[24,0]}})",
               d.substr(0, 24)),
       "bad data_offsets"},
      {"metadata-not-strings",
       file_of(std::string(kSmallHeader).substr(0, strlen(kSmallHeader) - 1) +
                   R"(,"__metadata__":{"a":1}})",
               d),
       "__metadata__ entry 'a' that is not a string"},
  };
  for (const auto& c : cases) {
    const auto p = dir / c.name;
    cxr::testing::write_bytes(p, c.bytes);
    const auto e = load_error(p);
    EXPECT_TRUE(contains(e, c.expect)) << c.name << ": " << e;
  }
  // The valid file these were made from loads.
  cxr::testing::write_bytes(dir / "good", file_of(kSmallHeader, d));
  Small m;
  cxr::models::load_module_weights((dir / "good").string(), m, "x");
  EXPECT_EQ(m.n[0].item<int64_t>(), 7);
  // A folder is not a weights file.
  EXPECT_TRUE(contains(load_error(dir.path()), "is not a regular file"));
  EXPECT_TRUE(contains(load_error(dir / "none"), "cannot be read"));
}

/// A seeded tiny baseline saved as the run folder `dir`.
struct TinyRun {
  std::string dir;
  cxr::train::RunMeta meta;
  cxr::models::BaselineCnn model{nullptr};

  TinyRun(const fs::path& folder, uint64_t seed) : dir(folder.string()) {
    torch::manual_seed(seed);
    model = cxr::models::BaselineCnn(cxr::testing::tiny_config());
    meta.model = cxr::testing::tiny_config();
    save();
  }
  void save() { cxr::train::save_run(dir, *model, meta); }
  /// The run as cxr loads it (config.json, then the weights).
  cxr::models::Classifier load() const {
    const auto cfg = cxr::infer::read_run_config(dir);
    return cxr::infer::load_model(dir, cfg.model, torch::kCPU);
  }
  /// The ModelError of loading the run ("(no error)" if it loads).
  std::string load_error() const {
    return error_of<cxr::ModelError>([&] { load(); });
  }
  /// Whether the loaded run computes what `model` does.
  void expect_loads_the_same() {
    auto back = load();
    auto x = torch::rand({2, 1, 16, 16});
    model->eval();
    EXPECT_TRUE(torch::equal(model->forward(x), back->forward(x)));
  }
  /// Replaces model.safetensors by `model`'s weights with `metadata`.
  void rewrite_weights(const std::map<std::string, std::string>& metadata) {
    cxr::models::save_module_weights(
        (fs::path(dir) / "model.safetensors").string(), *model, metadata);
  }
};

TEST(WeightsFile, RunFoldersAreWrittenAndReadAsSafetensors) {
  TempDir dir;
  TinyRun run(dir.path(), 3);
  EXPECT_TRUE(fs::is_regular_file(dir / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "model.pt"));
  run.expect_loads_the_same();

  // Weights of another input size (the shapes agree: global pooling).
  run.rewrite_weights({{"cxr_input_size", "24"}});
  auto e = run.load_error();
  EXPECT_TRUE(contains(e, "was trained at 24 px but config.json says 16 px"))
      << e;
  // The size is required: a file without it could belong to any run.
  run.rewrite_weights({});
  e = run.load_error();
  EXPECT_TRUE(contains(e, "lacks __metadata__.cxr_input_size")) << e;
  // NaN weights are refused as before.
  {
    torch::NoGradGuard g;
    run.model->parameters()[0].fill_(NAN);
  }
  run.rewrite_weights({{"cxr_input_size", "16"}});
  e = run.load_error();
  EXPECT_TRUE(contains(e, "model.safetensors' holds non-finite weights")) << e;
}

TEST(WeightsFile, OlderRunFoldersWithOnlyModelPtStillLoad) {
  TempDir dir;
  TinyRun run(dir.path(), 4);
  // What cxr wrote before model.safetensors: a torch archive.
  fs::remove(dir / "model.safetensors");
  torch::serialize::OutputArchive ar;
  run.model->save(ar);
  ar.write(cxr::infer::kInputSizeKey, c10::IValue(int64_t(16)));
  ar.save_to((dir / "model.pt").string());
  run.expect_loads_the_same();
  // With both, model.safetensors is the one read: a broken model.pt beside
  // a good model.safetensors is never opened.
  run.save();
  EXPECT_FALSE(fs::exists(dir / "model.pt"));  // the stale one is removed
  cxr::testing::write_bytes(dir / "model.pt", "garbage");
  EXPECT_NO_THROW(run.load());
  // Neither: the message names the file this cxr writes.
  fs::remove(dir / "model.pt");
  fs::remove(dir / "model.safetensors");
  const auto e = run.load_error();
  EXPECT_TRUE(contains(e, "model.safetensors' is missing")) << e;
}

}  // namespace
