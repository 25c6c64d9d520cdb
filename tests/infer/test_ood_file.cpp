// ood.safetensors: the OOD detector of a run folder in the data-only layout
// (models/weights_file.h): it round trips, and a damaged or hostile file is a
// ModelError naming it, never a crash. ood.pt (LibTorch archive) of older
// run folders still loads (tests/infer/test_ood.cpp).
#include <fstream>
#include <nlohmann/json.hpp>

#include "cxr/common/error.h"
#include "cxr/infer/ood.h"
#include "cxr/infer/predictor.h"
#include "cxr/models/weights_file.h"
#include "cxr/train/run.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using cxr::infer::OodDetector;
using namespace cxr::testing;

OodDetector fitted() {
  torch::manual_seed(5);
  auto a = torch::randn({80, 6});
  auto b = torch::randn({80, 4});
  auto labels = (torch::arange(80) % 2).to(torch::kFloat32);
  cxr::infer::OodOptions o;
  auto det = OodDetector::fit({"a", "b"}, {a, b}, labels, o);
  det.set_threshold(det.score({a, b}), 0.05, "test");
  det.reference = torch::rand({32, 32});
  det.train_quantile = 1.5;
  return det;
}

TEST(OodFile, RoundTripsInTheDataOnlyLayout) {
  TempDir dir;
  const OodDetector det = fitted();
  const auto path = (dir / cxr::infer::kOodFile).string();
  det.save(path);
  // A safetensors file: cxr's reader takes it, with the description in
  // __metadata__.
  const auto file = cxr::models::read_tensor_file(path, "x");
  ASSERT_EQ(file.tensors.size(), 5u);  // 2 x (means, precision), reference
  const auto meta = nlohmann::json::parse(file.metadata.at("cxr_ood"));
  EXPECT_EQ(meta.at("file"), cxr::infer::kOodFile);
  const OodDetector back = OodDetector::load(path);
  EXPECT_EQ(back.layer_names(), det.layer_names());
  EXPECT_DOUBLE_EQ(back.threshold, det.threshold);
  EXPECT_DOUBLE_EQ(back.train_quantile, 1.5);
  EXPECT_TRUE(torch::equal(back.reference, det.reference));
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_TRUE(torch::equal(back.layers[k].means, det.layers[k].means));
    EXPECT_TRUE(
        torch::equal(back.layers[k].precision, det.layers[k].precision));
  }
  auto x = torch::randn({5, 6}), y = torch::randn({5, 4});
  EXPECT_TRUE(torch::equal(back.score({x, y}), det.score({x, y})));
}

TEST(OodFile, ARunFolderUsesOodPtOnlyWhenItHasNothingElse) {
  TempDir dir;
  const auto d = dir.path().string();
  EXPECT_EQ(cxr::infer::ood_file(d), (dir / "ood.safetensors").string());
  fitted().save((dir / "ood.pt").string());
  EXPECT_EQ(cxr::infer::ood_file(d), (dir / "ood.pt").string());
  fitted().save((dir / "ood.safetensors").string());
  EXPECT_EQ(cxr::infer::ood_file(d), (dir / "ood.safetensors").string());
}

TEST(OodFile, DamagedOrHostileFilesAreModelErrors) {
  TempDir dir;
  const OodDetector det = fitted();
  const auto good = (dir / "good.safetensors").string();
  det.save(good);
  std::ifstream in(good, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto expect = [&](const std::string& name, const std::string& content,
                    const std::string& needle) {
    const auto p = (dir / name).string();
    cxr::testing::write_bytes(p, content);
    const auto e = error_of<cxr::ModelError>([&] { OodDetector::load(p); });
    EXPECT_TRUE(contains(e, "'" + p + "'")) << name << ": " << e;
    EXPECT_TRUE(contains(e, needle)) << name << ": " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  };
  expect("cut.safetensors", bytes.substr(0, bytes.size() / 2), "truncated");
  expect("garbage.safetensors", "garbage", "not a safetensors weights file");
  // A torch archive renamed: the extension decides, LibTorch never sees it.
  const auto pt = (dir / "x.pt").string();
  det.save(pt);
  std::ifstream pin(pt, std::ios::binary);
  expect("renamed.safetensors",
         std::string((std::istreambuf_iterator<char>(pin)), {}),
         "not a safetensors weights file");
  // Tensors right, description wrong or missing.
  auto with = [&](const std::map<std::string, std::string>& meta,
                  cxr::models::NamedTensors tensors) {
    const auto p = (dir / "tmp.safetensors").string();
    cxr::models::write_tensor_file(p, tensors, meta);
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), {});
  };
  const auto file = cxr::models::read_tensor_file(good, "x");
  const std::string meta_text = file.metadata.at("cxr_ood");
  expect("no-meta.safetensors", with({}, file.tensors), "no __metadata__");
  expect("bad-json.safetensors", with({{"cxr_ood", "{"}}, file.tensors),
         "is corrupt");
  auto v2 = nlohmann::json::parse(meta_text);
  v2["version"] = cxr::infer::kOodVersion + 1;
  expect("v2.safetensors", with({{"cxr_ood", v2.dump()}}, file.tensors),
         "version");
  auto extra = file.tensors;
  extra.emplace_back("extra", torch::ones({1}));
  expect("extra.safetensors", with({{"cxr_ood", meta_text}}, extra),
         "unexpected tensor 'extra'");
  auto missing = file.tensors;
  missing.erase(missing.begin());
  expect("missing.safetensors", with({{"cxr_ood", meta_text}}, missing),
         "is missing");
  auto wrong_type = file.tensors;
  for (auto& [name, t] : wrong_type) {
    if (name == "reference") t = t.to(torch::kFloat64);
  }
  expect("dtype.safetensors", with({{"cxr_ood", meta_text}}, wrong_type),
         "tensor 'reference' is F64, expected F32");
  auto shapes = file.tensors;
  for (auto& [name, t] : shapes) {
    if (name == "precision_0") t = torch::eye(3, torch::kFloat64);
  }
  expect("shape.safetensors", with({{"cxr_ood", meta_text}}, shapes),
         "mismatched shapes");
  // The input checks rotate the reference: a non-square one would fail
  // inside every prediction.
  auto wide = file.tensors;
  for (auto& [name, t] : wide) {
    if (name == "reference") t = torch::rand({32, 48});
  }
  expect("wide.safetensors", with({{"cxr_ood", meta_text}}, wide),
         "tensor 'reference' is not a 32 x 32 image");
}

// A detector that does not fit the run's model (another run's, or edited)
// is refused when the run is loaded, naming the file, instead of failing
// with a shape error inside every prediction.
TEST(OodFile, ADetectorThatDoesNotFitTheModelIsRefusedAtLoad) {
  TempDir dir;
  cxr::testing::make_tiny_dataset(dir / "data");
  const auto o = cxr::testing::tiny_run_options(dir.path(), "run");
  cxr::train::train_run(o);
  const auto file = (fs::path(o.out_dir) / cxr::infer::kOodFile).string();
  ASSERT_TRUE(fs::is_regular_file(file));
  EXPECT_NO_THROW(cxr::infer::Predictor::load(o.out_dir, torch::kCPU));
  const OodDetector good = OodDetector::load(file);

  OodDetector renamed = good;
  renamed.layers[0].layer = "nope";
  renamed.save(file);
  auto e = error_of<cxr::ModelError>(
      [&] { cxr::infer::Predictor::load(o.out_dir, torch::kCPU); });
  EXPECT_TRUE(contains(e, "'" + file +
                              "' models layer 'nope', which this run's "
                              "model does not have"))
      << e;

  OodDetector wider = good;
  const int64_t d = wider.layers[0].means.size(1) + 2;
  wider.layers[0].means = torch::zeros({2, d}, torch::kFloat64);
  wider.layers[0].precision = torch::eye(d, torch::kFloat64);
  wider.layers[0].prepare();
  wider.save(file);
  e = error_of<cxr::ModelError>(
      [&] { cxr::infer::Predictor::load(o.out_dir, torch::kCPU); });
  EXPECT_TRUE(
      contains(e, "expects " + std::to_string(d) + " features from layer"))
      << e;
}

}  // namespace
