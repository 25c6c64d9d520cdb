// Trust checks of Grad-CAM maps: model randomisation, deletion, energy, rank
// correlation; and `cxr explain` end to end on a tiny run.
#include <fstream>

#include "cxr/common/error.h"
#include "cxr/common/fs.h"
#include "cxr/data/image_io.h"
#include "cxr/explain/trust.h"
#include "cxr/models/baseline.h"
#include "cxr/train/run_dir.h"
#include "cxr/train/trainer.h"
#include "test_util.h"

namespace {

namespace nn = torch::nn;
namespace fs = std::filesystem;
using cxr::explain::TrustOptions;

using cxr::testing::hand_config;

/// Adebayo et al.'s failure case in miniature: the tapped layer is the input
/// itself and the head can only scale the evidence, so every Grad-CAM map is
/// the image, whatever the weights.
class InputMapModelImpl : public cxr::models::ClassifierImpl {
 public:
  InputMapModelImpl() : ClassifierImpl(hand_config()) {
    fc_ = register_module("fc", nn::Linear(1, 1));
  }
  torch::Tensor forward_tapped(const torch::Tensor& x,
                               cxr::models::Tap* tap) override {
    check_tap(tap);
    auto a = x * 1.0;
    maybe_tap(tap, "input", a);
    return a.mean({1, 2, 3}) * fc_->weight.abs().sum() + fc_->bias;
  }
  std::vector<std::string> tap_names() const override { return {"input"}; }
  std::string default_tap() const override { return "input"; }

 private:
  nn::Linear fc_{nullptr};
};

/// The logit is the mean vertical-edge energy of the top-left quadrant
/// (see test_gradcam.cpp for the map this gives).
std::shared_ptr<cxr::testing::QuadrantModelImpl> quadrant_model() {
  cxr::testing::QuadrantOptions o;
  o.top_right = false;
  o.scale = 8.0;
  o.offset = -2.0;
  return std::make_shared<cxr::testing::QuadrantModelImpl>(o);
}

/// Vertical stripes in the top-left quadrant, noise of the same range
/// elsewhere.
torch::Tensor stripes(int64_t n) {
  auto img = torch::rand({n, 1, 32, 32}) * 0.5f + 0.25f;
  for (int x = 0; x < 16; ++x) {
    img.select(3, x).slice(2, 0, 16).fill_(x % 2 ? 0.75f : 0.25f);
  }
  return img;
}

cxr::models::Classifier trained_baseline() {
  torch::manual_seed(0);
  auto model = std::make_shared<cxr::models::BaselineCnnImpl>(
      cxr::testing::tiny_config());
  const cxr::train::TrainOptions o = cxr::testing::tiny_train_options();
  auto train = cxr::testing::synthetic(64, 1),
       val = cxr::testing::synthetic(32, 2);
  cxr::train::fit(*model, train, &val, o, torch::Device(torch::kCPU));
  return model;
}

using TrustTest = cxr::testing::SeededTest;

TEST(TrustSpearman, KnownValuesWithTies) {
  auto a = torch::tensor({1.0, 2.0, 2.0, 3.0});
  auto b = torch::tensor({1.0, 2.0, 3.0, 4.0});
  // scipy.stats.spearmanr([1, 2, 2, 3], [1, 2, 3, 4]) = 0.9486832980505138
  EXPECT_NEAR(cxr::explain::spearman(a, b), 0.9486832980505138, 1e-12);
  EXPECT_NEAR(cxr::explain::spearman(b, b.exp()), 1.0, 1e-12);
  EXPECT_NEAR(cxr::explain::spearman(b, -b), -1.0, 1e-12);
  EXPECT_TRUE(std::isnan(cxr::explain::spearman(b, torch::ones({4}))));
  EXPECT_THROW(cxr::explain::spearman(b, torch::ones({3})), cxr::ConfigError);
  auto m = torch::rand({8, 8});
  EXPECT_NEAR(cxr::explain::spearman(m, m.t().t() * 3 + 1), 1.0, 1e-12);
}

TEST(TrustEnergy, SharesOfSyntheticMaps) {
  // Uniform map: the shares are the regions' areas (pixel centres).
  auto uniform = torch::ones({100, 100});
  auto s = cxr::explain::energy_shares(uniform);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_NEAR(s[0].lung, 0.70 * 0.75, 1e-12);
  EXPECT_NEAR(s[0].border, 1.0 - 0.84 * 0.84, 1e-12);
  auto maps = torch::zeros({3, 100, 100});
  maps[0][2][97] = 1.0;                                  // corner: a marker
  maps[1].slice(0, 40, 60).slice(1, 30, 70).fill_(0.5);  // lung field
  // maps[2] stays empty.
  auto t = cxr::explain::energy_shares(maps);
  EXPECT_DOUBLE_EQ(t[0].lung, 0.0);
  EXPECT_DOUBLE_EQ(t[0].border, 1.0);
  EXPECT_DOUBLE_EQ(t[1].lung, 1.0);
  EXPECT_DOUBLE_EQ(t[1].border, 0.0);
  EXPECT_TRUE(std::isnan(t[2].lung));
  EXPECT_TRUE(std::isnan(t[2].border));
  EXPECT_THROW(cxr::explain::energy_shares(-uniform), cxr::ConfigError);
  cxr::explain::EnergyRegions bad;
  bad.border = 0.6;
  EXPECT_THROW(cxr::explain::energy_shares(uniform, bad), cxr::ConfigError);
  auto lung = cxr::explain::lung_field_mask(20, 10);
  EXPECT_EQ(lung.sizes(), torch::IntArrayRef({20, 10}));
  EXPECT_TRUE(lung[10][5].item<bool>());
  EXPECT_FALSE(lung[0][0].item<bool>());
  EXPECT_TRUE(cxr::explain::border_mask(20, 10)[19][5].item<bool>());
}

TEST(TrustRandomization, ChoosesTheHeadAndLastConvolution) {
  auto bn = std::make_shared<cxr::models::BaselineCnnImpl>(
      cxr::testing::tiny_config());
  EXPECT_EQ(cxr::explain::top_modules(*bn),
            (std::vector<std::string>{"fc", "block2_bn", "block2_conv"}));
  EXPECT_EQ(cxr::explain::top_modules(*bn, 1),
            (std::vector<std::string>{"fc"}));
  EXPECT_THROW(cxr::explain::top_modules(*bn, -1), cxr::ConfigError);
  auto c = cxr::testing::tiny_config();
  c.batch_norm = false;
  auto plain = std::make_shared<cxr::models::BaselineCnnImpl>(c);
  EXPECT_EQ(cxr::explain::top_modules(*plain),
            (std::vector<std::string>{"fc", "block2_conv"}));

  // Re-initialisation touches exactly those modules, is seeded and keeps
  // buffers.
  auto before = bn->named_parameters();
  std::map<std::string, torch::Tensor> old;
  for (const auto& p : before) old[p.key()] = p.value().clone();
  auto old_buffers = cxr::train::snapshot(*bn);
  cxr::explain::reinitialize_modules(*bn, {"fc", "block2_bn", "block2_conv"},
                                     7);
  for (const auto& p : bn->named_parameters()) {
    const bool top =
        p.key().rfind("fc.", 0) == 0 || p.key().rfind("block2_", 0) == 0;
    EXPECT_EQ(torch::equal(p.value(), old[p.key()]),
              !top || p.key().rfind("block2_bn", 0) == 0)
        << p.key();
  }
  auto first = cxr::train::snapshot(*bn);
  cxr::explain::reinitialize_modules(*bn, {"fc", "block2_conv"}, 7);
  auto second = cxr::train::snapshot(*bn);
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_TRUE(torch::equal(first[i], second[i])) << i;
  }
  const size_t n_params = bn->parameters().size();
  for (size_t i = n_params; i < first.size(); ++i) {
    EXPECT_TRUE(torch::equal(first[i], old_buffers[i])) << "buffer " << i;
  }
  EXPECT_THROW(cxr::explain::reinitialize_modules(*bn, {"nope"}, 1),
               cxr::ConfigError);
}

TEST_F(TrustTest, RandomizationFlagsMapsThatIgnoreTheWeights) {
  auto model = std::make_shared<InputMapModelImpl>();
  auto weights = cxr::train::snapshot(*model);
  TrustOptions o;
  o.deletion_fractions = {0.2};
  auto rep =
      cxr::explain::trust_checks(model, torch::rand({4, 1, 32, 32}), {}, o);
  EXPECT_EQ(rep.randomized_modules, (std::vector<std::string>{"fc"}));
  EXPECT_NEAR(rep.mean_rank_correlation, 1.0, 1e-9);
  EXPECT_TRUE(rep.untrustworthy);
  ASSERT_EQ(rep.cascade.size(), 1u);
  EXPECT_NEAR(rep.cascade[0].mean_abs_rank_correlation, 1.0, 1e-9);
  auto none =
      cxr::explain::trust_checks(model, torch::rand({0, 1, 32, 32}), {}, o);
  EXPECT_TRUE(none.images.empty());
  EXPECT_TRUE(std::isnan(none.mean_rank_correlation));
  EXPECT_FALSE(none.untrustworthy);
  // The weights are back.
  auto after = cxr::train::snapshot(*model);
  for (size_t i = 0; i < weights.size(); ++i) {
    EXPECT_TRUE(torch::equal(weights[i], after[i])) << i;
  }
}

TEST_F(TrustTest, RandomizationPassesATrainedModel) {
  auto model = trained_baseline();
  auto weights = cxr::train::snapshot(*model);
  auto val = cxr::testing::synthetic(16, 3);
  TrustOptions o;
  o.deletion_fractions = {0.2};
  auto rep = cxr::explain::trust_checks(model, val.images, val.labels, o);
  RecordProperty("mean_rank_correlation",
                 std::to_string(rep.mean_rank_correlation));
  EXPECT_LT(rep.mean_rank_correlation, 0.5);
  EXPECT_FALSE(rep.untrustworthy);
  // The cascade: head, block 2, block 1; the maps decorrelate going down.
  ASSERT_EQ(rep.cascade.size(), 3u);
  EXPECT_EQ(rep.cascade[0].layer, "fc");
  EXPECT_EQ(rep.cascade[2].layer, "block1_conv");
  for (const auto& s : rep.cascade) {
    RecordProperty("cascade_" + s.layer,
                   std::to_string(s.mean_abs_rank_correlation));
  }
  EXPECT_LT(rep.cascade.back().mean_abs_rank_correlation,
            rep.cascade.front().mean_abs_rank_correlation);
  EXPECT_LT(rep.cascade.back().mean_abs_rank_correlation, 0.5);
  EXPECT_EQ(rep.images[0].cascade_correlations.size(), 3u);
  auto after = cxr::train::snapshot(*model);
  for (size_t i = 0; i < weights.size(); ++i) {
    EXPECT_TRUE(torch::equal(weights[i], after[i])) << i;
  }
  ASSERT_EQ(rep.images.size(), 16u);
  for (const auto& im : rep.images) {
    EXPECT_TRUE(im.label == 0 || im.label == 1);
    EXPECT_GE(im.rank_correlation, -1.0);
    EXPECT_LE(im.rank_correlation, 1.0);
  }
  auto j = rep.to_json();
  EXPECT_EQ(j["images"].size(), 16u);
  EXPECT_EQ(j["randomization"]["untrustworthy"], false);
  EXPECT_NEAR(j["energy"]["uniform_map"]["lung"].get<double>(), 0.525, 1e-12);
}

TEST(TrustRandomization, CascadeGoesFromTheOutputToTheFirstLayer) {
  auto bn = std::make_shared<cxr::models::BaselineCnnImpl>(
      cxr::testing::tiny_config());
  using Groups = std::vector<std::vector<std::string>>;
  EXPECT_EQ(
      cxr::explain::cascade_groups(*bn),
      (Groups{
          {"fc"}, {"block2_bn", "block2_conv"}, {"block1_bn", "block1_conv"}}));
  EXPECT_EQ(cxr::explain::cascade_groups(*bn, 3),
            cxr::explain::cascade_groups(*bn));
  // Capped: the head alone, the rest in contiguous groups.
  EXPECT_EQ(cxr::explain::cascade_groups(*bn, 2),
            (Groups{{"fc"},
                    {"block2_bn", "block2_conv", "block1_bn", "block1_conv"}}));
  EXPECT_EQ(
      cxr::explain::cascade_groups(*bn, 1),
      (Groups{{"fc", "block2_bn", "block2_conv", "block1_bn", "block1_conv"}}));
  EXPECT_THROW(cxr::explain::cascade_groups(*bn, -1), cxr::ConfigError);

  // The cascade resets batch-norm running statistics too, never the model's
  // normalisation constants.
  auto bn_module = std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(
      bn->named_modules()["block1_bn"]);
  ASSERT_TRUE(bn_module);
  {
    torch::NoGradGuard no_grad;
    bn_module->running_mean.fill_(3.0);
    bn_module->running_var.fill_(5.0);
  }
  std::map<std::string, torch::Tensor> buffers;
  for (const auto& b : bn->named_buffers())
    buffers[b.key()] = b.value().clone();
  cxr::explain::reinitialize_modules(*bn, {"block1_bn"}, 1);
  EXPECT_TRUE(
      torch::equal(bn_module->running_mean, buffers["block1_bn.running_mean"]));
  cxr::explain::reinitialize_modules(*bn, {"block1_bn"}, 1,
                                     /*reset_statistics=*/true);
  EXPECT_TRUE(torch::all(bn_module->running_mean == 0).item<bool>());
  EXPECT_TRUE(torch::all(bn_module->running_var == 1).item<bool>());
  for (const auto& b : bn->named_buffers()) {
    if (b.key().rfind("block1_bn.", 0) == 0) continue;
    EXPECT_TRUE(torch::equal(b.value(), buffers[b.key()])) << b.key();
  }
}

TEST(TrustRandomization, TheRuleWantsMapsThatDecorrelateAndStaySo) {
  using cxr::explain::cascade_decorrelates;
  EXPECT_TRUE(cascade_decorrelates({0.9, 0.6, 0.3, 0.1}, 0.5, 0.05));
  EXPECT_TRUE(cascade_decorrelates({0.2, 0.22, 0.1}, 0.5, 0.05));
  EXPECT_TRUE(cascade_decorrelates({0.3}, 0.5, 0.05));
  // A map the weights do not touch.
  EXPECT_FALSE(cascade_decorrelates({1.0, 1.0, 1.0}, 0.5, 0.05));
  EXPECT_FALSE(cascade_decorrelates({0.7}, 0.5, 0.05));
  // Low at the end but the maps came back deeper down (edge-detector-like
  // maps of a random network).
  EXPECT_FALSE(cascade_decorrelates({0.1, 0.6, 0.4, 0.3}, 0.5, 0.05));
  EXPECT_FALSE(cascade_decorrelates({}, 0.5, 0.05));
  EXPECT_FALSE(cascade_decorrelates({0.1, NAN}, 0.5, 0.05));
}

TEST_F(TrustTest, DeletionGuidedByTheMapHurtsMoreThanRandom) {
  auto model = quadrant_model();
  auto x = stripes(6);
  TrustOptions o;
  auto rep = cxr::explain::trust_checks(model, x, {}, o);
  ASSERT_EQ(rep.mean_drop_guided.size(), 3u);
  for (size_t f = 0; f < 3; ++f) {
    RecordProperty("drop_" + std::to_string(f),
                   std::to_string(rep.mean_drop_guided[f]) + " vs " +
                       std::to_string(rep.mean_drop_random[f]));
    EXPECT_GT(rep.mean_drop_guided[f], rep.mean_drop_random[f] + 0.05)
        << "fraction " << o.deletion_fractions[f];
  }
  for (const auto& im : rep.images) {
    EXPECT_EQ(im.predicted, 1);
    EXPECT_EQ(im.label, -1);
    ASSERT_EQ(im.drop_guided.size(), 3u);
    // The drop can only be as large as P(predicted).
    EXPECT_LE(im.drop_guided[2], im.probability + 1e-9);
  }
  // Deterministic for a seed.
  auto again = cxr::explain::trust_checks(model, x, {}, o);
  EXPECT_EQ(again.mean_drop_random, rep.mean_drop_random);
  o.deletion_fractions = {0.0};
  EXPECT_THROW(cxr::explain::trust_checks(model, x, {}, o), cxr::ConfigError);
  EXPECT_THROW(cxr::explain::trust_checks(model, x, torch::ones({2}), {}),
               cxr::ConfigError);
}

// ------------------------------------------------------------- the CLI ---

/// A run of a tiny untrained baseline on a tiny split-layout dataset.
struct TinyRun {
  cxr::testing::TempDir dir;
  std::string run, data;
  explicit TinyRun(double threshold) {
    run = (dir / "run").string();
    data = (dir / "data").string();
    torch::manual_seed(3);
    for (const char* split : {"train", "val", "test"}) {
      for (const char* cls : {"COVID", "Normal"}) {
        for (int i = 0; i < 2; ++i) {
          auto img = (torch::rand({24, 24}) * 255).to(torch::kUInt8);
          const auto p = dir / "data" / split / cls /
                         (std::string(cls) + "-" + std::to_string(i) + ".png");
          fs::create_directories(p.parent_path());
          cxr::data::write_png(p.string(), img);
        }
      }
    }
    auto model = std::make_shared<cxr::models::BaselineCnnImpl>(
        cxr::testing::tiny_config());
    cxr::train::RunMeta meta;
    meta.model = cxr::testing::tiny_config();
    meta.threshold = threshold;
    meta.data = {{"root", data}, {"size", 16}, {"positive", "COVID"}};
    cxr::train::save_run(run, *model, meta);
  }
};

std::string cxr_cmd(const std::string& args) {
  return std::string(CXR_BINARY) + " explain " + args + " --threads 1";
}

TEST(ExplainCli, ListsLayersAndRejectsABadLayer) {
  TinyRun t(0.5);
  std::string log;
  ASSERT_EQ(cxr::testing::run_command(cxr_cmd(t.run + " --list-layers"), &log),
            0)
      << log;
  EXPECT_NE(log.find("block1_conv"), std::string::npos) << log;
  EXPECT_NE(log.find("block2_relu  (default)"), std::string::npos) << log;
  const std::string img = t.data + "/test/COVID/COVID-0.png";
  const auto out = (t.dir / "bad").string();
  int rc = cxr::testing::run_command(
      cxr_cmd(t.run + " " + img + " --out " + out + " --layer conv9"), &log);
  EXPECT_EQ(rc, 2) << log;
  EXPECT_NE(log.find("conv9"), std::string::npos) << log;
  EXPECT_NE(log.find("block2_relu"), std::string::npos) << log;
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  rc = cxr::testing::run_command(cxr_cmd(t.run), &log);
  EXPECT_EQ(rc, 2) << log;
  EXPECT_NE(log.find("--split"), std::string::npos) << log;
  // Without --out the run's explain/ folder is used (docs/run-dir.md).
  ASSERT_EQ(cxr::testing::run_command(cxr_cmd(t.run + " " + img), &log), 0)
      << log;
  EXPECT_TRUE(fs::exists(fs::path(t.run) / "explain" / "index.html"));
  rc = cxr::testing::run_command(
      cxr_cmd(t.run + " " + t.data + "/nothing.png --out " + out), &log);
  EXPECT_EQ(rc, 3) << log;
}

TEST(ExplainCli, FolderWithTrustChecks) {
  TinyRun t(0.5);
  std::string log;
  const auto out = t.dir / "folder";
  ASSERT_EQ(cxr::testing::run_command(
                cxr_cmd(t.run + " " + t.data + "/test --out " + out.string() +
                        " --trust --batch-size 3"),
                &log),
            0)
      << log;
  auto s = cxr::read_json(out / "summary.json");
  EXPECT_EQ(s["images"], 4);
  EXPECT_EQ(s["labelled"], 4);  // from the COVID/Normal folder names
  EXPECT_EQ(s["layer"], "block2_relu");
  ASSERT_TRUE(s.contains("trust"));
  // The cascade runs from the output down to the first layer.
  EXPECT_EQ(s["trust"]["randomization"]["modules"],
            nlohmann::json({"fc", "block2_bn", "block2_conv", "block1_bn",
                            "block1_conv"}));
  EXPECT_EQ(s["trust"]["randomization"]["cascade"].size(), 3u);
  EXPECT_TRUE(fs::exists(out / "trust.json"));
  int records = 0;
  for (const auto& e : fs::directory_iterator(out / "records")) {
    auto r = cxr::read_json(e.path());
    EXPECT_TRUE(r.contains("trust")) << e.path();
    EXPECT_TRUE(r["true_label"].is_string()) << e.path();
    const double p = r["p_COVID"];
    EXPECT_EQ(r["prediction"], p >= 0.5 ? "COVID" : "Normal");
    EXPECT_TRUE(fs::exists(out / r["panel"].get<std::string>()));
    EXPECT_TRUE(fs::exists(out / r["thumbnail"].get<std::string>()));
    ++records;
  }
  EXPECT_EQ(records, 4);
}

TEST(ExplainCli, SavesRawMapsAndDrawsTheRandomisationCurve) {
  TinyRun t(0.5);
  std::string log;
  const auto out = t.dir / "maps";
  ASSERT_EQ(cxr::testing::run_command(
                cxr_cmd(t.run + " " + t.data + "/test/COVID --out " +
                        out.string() + " --trust --save-maps"),
                &log),
            0)
      << log;
  // format_summary: the curve, output first, and the files.
  EXPECT_NE(log.find("randomisation cascade"), std::string::npos) << log;
  EXPECT_NE(log.find("fc "), std::string::npos) << log;
  EXPECT_NE(log.find("block1_conv "), std::string::npos) << log;
  EXPECT_NE(log.find(",maps/}"), std::string::npos) << log;
  auto s = cxr::read_json(out / "summary.json");
  EXPECT_EQ(s["maps"], "maps/");
  EXPECT_TRUE(fs::exists(out / "randomisation.png"));
  EXPECT_NE(cxr::read_text(out / "index.html").find("randomisation.png"),
            std::string::npos);
  int records = 0;
  for (const auto& e : fs::directory_iterator(out / "records")) {
    auto r = cxr::read_json(e.path());
    ASSERT_TRUE(r.contains("maps")) << e.path();
    for (const char* cls : {"COVID", "Normal"}) {
      const auto npy = out / r["maps"][cls].get<std::string>();
      ASSERT_TRUE(fs::exists(npy)) << npy;
      EXPECT_NE(npy.filename().string().find(std::string("_") + cls + ".npy"),
                std::string::npos);
      // 16 x 16 float32 behind a 128-byte header.
      EXPECT_EQ(fs::file_size(npy), 128u + 16u * 16u * 4u) << npy;
      EXPECT_NE(cxr::read_text(npy).find("'shape': (16, 16)"),
                std::string::npos);
    }
    ++records;
  }
  EXPECT_EQ(records, 2);
}

TEST(ExplainCli, MisclassifiedTestImagesWithAnIndexPage) {
  // Threshold 0: everything is called COVID, so exactly the two Normal test
  // images are wrong.
  TinyRun t(0.0);
  std::string log;
  const auto out = t.dir / "wrong";
  ASSERT_EQ(cxr::testing::run_command(
                cxr_cmd(t.run +
                        " --misclassified --split test --no-cache "
                        "--out " +
                        out.string()),
                &log),
            0)
      << log;
  auto s = cxr::read_json(out / "summary.json");
  EXPECT_EQ(s["images"], 2);
  EXPECT_EQ(s["misclassified"], 2);
  EXPECT_EQ(s["split_size"], 4);
  std::ifstream f(out / "index.html");
  std::string html((std::istreambuf_iterator<char>(f)),
                   std::istreambuf_iterator<char>());
  int links = 0;
  for (const auto& e : fs::directory_iterator(out / "panels")) {
    const auto name = e.path().filename().string();
    EXPECT_NE(name.find("Normal-"), std::string::npos) << name;
    EXPECT_NE(html.find("href=\"panels/" + name + "\""), std::string::npos)
        << name;
    EXPECT_NE(html.find("src=\"thumbs/" + name + "\""), std::string::npos)
        << name;
    ++links;
  }
  EXPECT_EQ(links, 2);
  for (const auto& e : fs::directory_iterator(out / "records")) {
    auto r = cxr::read_json(e.path());
    EXPECT_EQ(r["true_label"], "Normal");
    EXPECT_EQ(r["prediction"], "COVID");
    EXPECT_EQ(r["correct"], false);
  }
}

}  // namespace
