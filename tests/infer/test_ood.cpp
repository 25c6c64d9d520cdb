// The feature-space OOD detector on synthetic Gaussian features: in- and
// out-of-distribution flag rates, the Wilson threshold rule, the file
// round trip and its errors, and the layers it taps.
#include <algorithm>
#include <cmath>
#include <fstream>

#include "cxr/common/error.h"
#include "cxr/infer/ood.h"
#include "cxr/metrics/metrics.h"
#include "test_util.h"

namespace {

using cxr::infer::OodDetector;
using cxr::infer::OodOptions;
using cxr::testing::TempDir;

/// Features of one layer: class 0 ~ N(mu0, S), class 1 ~ N(mu1, S), S a
/// fixed correlated covariance (x = mu + A e). Rows alternate 0, 1, ...
struct Source {
  torch::Tensor a, mu0, mu1;
};

Source make_source(int64_t dim, uint64_t seed) {
  torch::manual_seed(seed);
  Source s;
  // Unequal scales and correlations between the dimensions.
  s.a = torch::eye(dim, torch::kFloat64) * 0.8 +
        torch::randn({dim, dim}, torch::kFloat64) * 0.3;
  s.a = s.a * torch::linspace(0.5, 3.0, dim, torch::kFloat64);
  s.mu0 = torch::randn({dim}, torch::kFloat64);
  s.mu1 = s.mu0 + 2.0;
  return s;
}

/// n samples (half per class) and their labels [n].
torch::Tensor sample(const Source& s,
                     int64_t n,
                     uint64_t seed,
                     torch::Tensor* labels = nullptr) {
  torch::manual_seed(seed);
  const int64_t d = s.mu0.numel();
  auto y = torch::arange(n) % 2;
  auto e = torch::randn({n, d}, torch::kFloat64);
  auto mu =
      torch::where(y.unsqueeze(1) == 1, s.mu1.unsqueeze(0), s.mu0.unsqueeze(0));
  if (labels) *labels = y.to(torch::kFloat32);
  return (mu + e.matmul(s.a.t())).to(torch::kFloat32);
}

/// The per-dimension standard deviation of the source (both classes share
/// it): sqrt(diag(A A^T)).
torch::Tensor source_sd(const Source& s) {
  return s.a.matmul(s.a.t()).diagonal().sqrt();
}

double flag_rate(const torch::Tensor& scores, double threshold) {
  return (scores > threshold).to(torch::kFloat64).mean().item<double>();
}

struct Fitted {
  Source l1 = make_source(8, 1), l2 = make_source(4, 2);
  OodDetector det;
};

/// A detector on two layers (8-D and 4-D), 1000 training samples (500 per
/// class), threshold set on 1000 held-out samples.
Fitted fit_two_layers() {
  Fitted f;
  torch::Tensor y;
  auto x1 = sample(f.l1, 1000, 10, &y);
  auto x2 = sample(f.l2, 1000, 11);
  f.det = OodDetector::fit({"a", "b"}, {x1, x2}, y, OodOptions{});
  auto h1 = sample(f.l1, 1000, 20);
  auto h2 = sample(f.l2, 1000, 21);
  f.det.set_threshold(f.det.score({h1, h2}), 0.05, "held out");
  return f;
}

TEST(OodDetector, FlagsShiftedFeaturesNotFreshOnes) {
  const Fitted f = fit_two_layers();
  const OodDetector& det = f.det;
  ASSERT_EQ(det.layers.size(), 2u);
  EXPECT_EQ(det.layer_names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(det.layers[0].means.sizes(), torch::IntArrayRef({2, 8}));
  EXPECT_EQ(det.layers[0].precision.sizes(), torch::IntArrayRef({8, 8}));
  EXPECT_EQ(det.layers[1].means.sizes(), torch::IntArrayRef({2, 4}));
  EXPECT_EQ(det.threshold_rule, "held out");
  EXPECT_LE(det.fitted_flag_rate, 0.05);
  EXPECT_GT(det.fitted_flag_rate, 0.0);

  // Fresh in-distribution samples: about the fitted rate, at most ~6 %.
  auto n1 = sample(f.l1, 2000, 30);
  auto n2 = sample(f.l2, 2000, 31);
  const auto fresh = det.score({n1, n2});
  ASSERT_EQ(fresh.numel(), 2000);
  EXPECT_EQ(fresh.scalar_type(), torch::kFloat64);
  EXPECT_LE(flag_rate(fresh, det.threshold), 0.06);

  // Shifted by 6 sd in three dimensions of the first layer: flagged.
  auto shift = torch::zeros({8}, torch::kFloat64);
  const auto sd = source_sd(f.l1);
  for (int64_t k : {0, 3, 6}) shift[k] = 6 * sd[k].item<double>();
  auto shifted = (n1.to(torch::kFloat64) + shift).to(torch::kFloat32);
  EXPECT_GE(flag_rate(det.score({shifted, n2}), det.threshold), 0.99);
  // A large scale change of every feature too.
  EXPECT_GE(flag_rate(det.score({n1 * 4, n2 * 4}), det.threshold), 0.99);
}

TEST(OodDetector, WhitenedFloat32DistanceEqualsThePrecisionForm) {
  const Fitted f = fit_two_layers();
  OodDetector fast = f.det;
  ASSERT_TRUE(fast.layers[0].whiten.defined());
  auto n1 = sample(f.l1, 500, 50);
  auto n2 = sample(f.l2, 500, 51);
  auto shifted = n1 * 3 + 1;
  OodDetector exact = fast;
  // Without the whitening the float64 (x - mean) P (x - mean) form is used.
  for (auto& g : exact.layers) g.whiten = torch::Tensor();
  for (const auto& x : {n1, shifted}) {
    const auto a = fast.score({x, n2});
    const auto b = exact.score({x, n2});
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4))
        << (a - b).abs().max().item<double>();
  }
}

TEST(OodDetector, OneLayerAndTrainingScoresAreStandardised) {
  const Source s = make_source(8, 3);
  torch::Tensor y;
  auto x = sample(s, 1000, 40, &y);
  OodOptions o;
  o.shrinkage = 0.0;
  auto det = OodDetector::fit({"only"}, {x}, y, o);
  // Each layer's distance is standardised on the training images.
  const auto train = det.score({x});
  EXPECT_NEAR(train.mean().item<double>(), 0.0, 1e-9);
  EXPECT_NEAR(train.std().item<double>(), 1.0, 1e-9);
  // The class means are the training means; a point at a class mean has the
  // lowest possible score (distance 0).
  auto m0 = x.index({y == 0}).to(torch::kFloat64).mean(0);
  EXPECT_TRUE(torch::allclose(det.layers[0].means[0], m0, 1e-9, 1e-9));
  const auto at_mean = det.score({m0.unsqueeze(0).to(torch::kFloat32)});
  EXPECT_NEAR(at_mean.item<double>(),
              -det.layers[0].score_mean / det.layers[0].score_std, 1e-4);
  EXPECT_LT(at_mean.item<double>(), train.min().item<double>() + 1e-6);

  auto h = sample(s, 1000, 41);
  det.set_threshold(det.score({h}), 0.05, "held out");
  EXPECT_LE(flag_rate(det.score({sample(s, 2000, 42)}), det.threshold), 0.06);
  auto far = sample(s, 500, 43).to(torch::kFloat64);
  const auto sd = source_sd(s);
  for (int64_t k : {1, 2, 5}) {
    far.select(1, k).add_(6 * sd[k].item<double>());
  }
  EXPECT_GE(flag_rate(det.score({far.to(torch::kFloat32)}), det.threshold),
            0.99);
}

TEST(OodDetector, BadInputs) {
  const Source s = make_source(4, 4);
  torch::Tensor y;
  auto x = sample(s, 100, 50, &y);
  OodOptions bad;
  bad.shrinkage = 1.5;
  EXPECT_THROW(OodDetector::fit({"a"}, {x}, y, bad), cxr::ConfigError);
  EXPECT_THROW(OodDetector::fit({"a", "b"}, {x}, y, OodOptions{}),
               cxr::ConfigError);
  EXPECT_THROW(OodDetector::fit({}, {}, y, OodOptions{}), cxr::ConfigError);
  EXPECT_THROW(OodDetector::fit({"a"}, {x.slice(0, 0, 50)}, y, OodOptions{}),
               cxr::DataError);
  auto det = OodDetector::fit({"a"}, {x}, y, OodOptions{});
  EXPECT_THROW(det.score({x, x}), cxr::ModelError);
  EXPECT_THROW(det.set_threshold(torch::empty({0}), 0.05, ""), cxr::DataError);
}

// The Wilson rule, by hand: with 400 scores and rate 0.05 the most flags
// whose 95 % upper bound stays <= 0.05 is 11 (upper bound 0.0486; 12 flags
// give 0.0517), i.e. 2.75 % flagged.
TEST(OodDetector, SetThresholdFollowsTheWilsonBound) {
  const int64_t n = 400;
  // Scores 1..400 in a shuffled order.
  torch::manual_seed(3);
  const auto scores =
      (torch::randperm(n, torch::kLong) + 1).to(torch::kFloat64);
  for (double rate : {0.05, 0.02, 0.1, 0.3}) {
    OodDetector det;
    det.set_threshold(scores, rate, "rule");
    int64_t k = 0;
    while (k + 1 < n && cxr::metrics::wilson_interval(k + 1, n).high <= rate) {
      ++k;
    }
    ASSERT_GT(k, 0) << rate;
    EXPECT_LE(cxr::metrics::wilson_interval(k, n).high, rate);
    EXPECT_GT(cxr::metrics::wilson_interval(k + 1, n).high, rate);
    const auto flagged = (scores > det.threshold).sum().item<int64_t>();
    EXPECT_EQ(flagged, k) << rate;
    EXPECT_DOUBLE_EQ(det.fitted_flag_rate, static_cast<double>(k) / n);
    EXPECT_LE(det.fitted_flag_rate, rate);
    // Halfway between the last unflagged and the first flagged score.
    EXPECT_DOUBLE_EQ(det.threshold, static_cast<double>(n - k) + 0.5);
    EXPECT_DOUBLE_EQ(det.false_flag_rate, rate);
    EXPECT_EQ(det.threshold_rule, "rule");
    if (rate == 0.05) {
      EXPECT_EQ(k, 11);
    }
  }
  // Too few images for any flag within the bound: nothing flagged.
  OodDetector few;
  few.set_threshold(torch::arange(1, 11, torch::kFloat64), 0.05, "");
  EXPECT_EQ(few.fitted_flag_rate, 0.0);
  EXPECT_GT(few.threshold, 10.0);
  // Bad rates.
  OodDetector det;
  for (double rate : {0.0, 1.0, -0.1, 1.5, std::nan("")}) {
    EXPECT_THROW(det.set_threshold(scores, rate, ""), cxr::ConfigError) << rate;
  }
}

TEST(OodDetector, SaveLoadRoundTrip) {
  Fitted f = fit_two_layers();
  f.det.reference = torch::rand({32, 32});
  f.det.train_quantile = 1.25;
  TempDir dir;
  const auto path = (dir / "ood.pt").string();
  f.det.save(path);
  const auto back = OodDetector::load(path);
  EXPECT_EQ(back.layer_names(), f.det.layer_names());
  EXPECT_DOUBLE_EQ(back.threshold, f.det.threshold);
  EXPECT_EQ(back.threshold_rule, f.det.threshold_rule);
  EXPECT_DOUBLE_EQ(back.false_flag_rate, f.det.false_flag_rate);
  EXPECT_DOUBLE_EQ(back.fitted_flag_rate, f.det.fitted_flag_rate);
  EXPECT_DOUBLE_EQ(back.train_quantile, 1.25);
  ASSERT_TRUE(back.reference.defined());
  EXPECT_TRUE(torch::equal(back.reference, f.det.reference));
  for (size_t k = 0; k < 2; ++k) {
    EXPECT_TRUE(torch::equal(back.layers[k].means, f.det.layers[k].means));
    EXPECT_TRUE(
        torch::equal(back.layers[k].precision, f.det.layers[k].precision));
    EXPECT_DOUBLE_EQ(back.layers[k].score_mean, f.det.layers[k].score_mean);
    EXPECT_DOUBLE_EQ(back.layers[k].score_std, f.det.layers[k].score_std);
  }
  auto n1 = sample(f.l1, 300, 60);
  auto n2 = sample(f.l2, 300, 61);
  EXPECT_TRUE(torch::equal(back.score({n1, n2}), f.det.score({n1, n2})));
  const auto j = back.summary();
  EXPECT_EQ(j["version"], cxr::infer::kOodVersion);
  EXPECT_EQ(j["file"], "ood.safetensors");
  EXPECT_EQ(j["layers"], nlohmann::json({"a", "b"}));
  EXPECT_DOUBLE_EQ(j["threshold"].get<double>(), f.det.threshold);
}

TEST(OodDetector, RoundTripWithoutTrainQuantileOrReference) {
  // A freshly fitted detector has train_quantile NaN and no reference
  // image; it must still save and load.
  Fitted f = fit_two_layers();
  ASSERT_TRUE(std::isnan(f.det.train_quantile));
  TempDir dir;
  const auto path = (dir / "ood.pt").string();
  f.det.save(path);
  OodDetector back;
  ASSERT_NO_THROW(back = OodDetector::load(path));
  EXPECT_TRUE(std::isnan(back.train_quantile));
  EXPECT_FALSE(back.reference.defined());
  EXPECT_DOUBLE_EQ(back.threshold, f.det.threshold);
}

void expect_model_error(const std::string& path, const std::string& needle) {
  try {
    OodDetector::load(path);
    FAIL() << "expected ModelError for " << path;
  } catch (const cxr::ModelError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
}

TEST(OodDetector, CorruptMissingOrOtherVersionFilesAreModelErrors) {
  TempDir dir;
  expect_model_error((dir / "missing.pt").string(), "missing");
  cxr::testing::write_bytes(dir / "garbage.pt", "this is not a torch archive");
  expect_model_error((dir / "garbage.pt").string(), "corrupt");
  cxr::testing::write_bytes(dir / "empty.pt", "");
  expect_model_error((dir / "empty.pt").string(), "corrupt");

  // A valid file cut in half.
  Fitted f = fit_two_layers();
  f.det.train_quantile = 1.0;
  const auto good = (dir / "good.pt").string();
  f.det.save(good);
  std::ifstream in(good, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)),
                    std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 100u);
  cxr::testing::write_bytes(dir / "cut.pt", bytes.substr(0, bytes.size() / 2));
  expect_model_error((dir / "cut.pt").string(), "corrupt");

  // Another version.
  {
    torch::serialize::OutputArchive ar;
    auto meta = f.det.summary();
    meta["version"] = cxr::infer::kOodVersion + 1;
    meta["stats"] = nlohmann::json::array();
    ar.write("meta", c10::IValue(meta.dump()));
    ar.write("reference", torch::empty({0}));
    ar.save_to((dir / "v2.pt").string());
  }
  expect_model_error((dir / "v2.pt").string(), "version");
}

// A torch archive that is not a detector (e.g. model.pt copied over ood.pt)
// is a ModelError naming the file, like any other corrupt file (exit code 4,
// not an internal error).
TEST(OodDetector, ArchiveWithoutTheDetectorEntriesIsAModelError) {
  TempDir dir;
  const auto path = (dir / "other.pt").string();
  {
    torch::serialize::OutputArchive ar;
    ar.write("something", torch::ones({2}));
    ar.save_to(path);
  }
  try {
    OodDetector::load(path);
    FAIL() << "expected ModelError";
  } catch (const cxr::ModelError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ModelError, got another exception: " << e.what();
  }
}

TEST(OodDetector, ChooseLayersOnTheTinyModel) {
  auto model = cxr::models::make_model(cxr::testing::tiny_config());
  const auto names = model->tap_names();
  std::string last_relu;
  int relus = 0;
  for (const auto& n : names) {
    if (n.find("relu") != std::string::npos) {
      last_relu = n;
      ++relus;
    }
  }
  ASSERT_FALSE(last_relu.empty());
  for (int count = 1; count <= static_cast<int>(names.size()) + 2; ++count) {
    const auto chosen = OodDetector::choose_layers(*model, count);
    ASSERT_FALSE(chosen.empty()) << count;
    EXPECT_LE(chosen.size(), static_cast<size_t>(count));
    EXPECT_EQ(chosen.back(), last_relu) << count;
    std::vector<size_t> at;
    for (const auto& c : chosen) {
      const auto it = std::find(names.begin(), names.end(), c);
      ASSERT_NE(it, names.end()) << c << " is not a tap name";
      at.push_back(static_cast<size_t>(it - names.begin()));
    }
    // Distinct, in model order (early to late).
    for (size_t i = 1; i < at.size(); ++i) {
      EXPECT_LT(at[i - 1], at[i]) << count;
    }
    // Post-activation maps only, when there are enough of them.
    if (count <= relus) {
      for (const auto& c : chosen) {
        EXPECT_NE(c.find("relu"), std::string::npos) << count << " " << c;
      }
    }
  }
  EXPECT_EQ(OodDetector::choose_layers(*model, 1),
            std::vector<std::string>{last_relu});
  EXPECT_TRUE(OodDetector::choose_layers(*model, 0).empty());
  // The layers feed forward_logits and fit a detector.
  const auto layers = OodDetector::choose_layers(*model, 4);
  auto imgs = cxr::testing::synthetic(40, 1, 16);
  std::vector<torch::Tensor> feats;
  cxr::infer::forward_logits(*model, imgs.images, torch::kCPU, 16, layers,
                             &feats);
  ASSERT_EQ(feats.size(), layers.size());
  auto det = OodDetector::fit(layers, feats, imgs.labels, OodOptions{});
  EXPECT_EQ(det.layer_names(), layers);
  EXPECT_TRUE(torch::isfinite(det.score(feats)).all().item<bool>());
}

// Asking for as many layers as the model has (or fewer) gives that many
// distinct layers: the default 4 on a 4-block baseline taps 4 layers.
TEST(OodDetector, ChooseLayersGivesTheCountAsked) {
  auto tiny = cxr::models::make_model(cxr::testing::tiny_config());
  const int taps = static_cast<int>(tiny->tap_names().size());
  for (int count = 1; count <= taps; ++count) {
    EXPECT_EQ(OodDetector::choose_layers(*tiny, count).size(),
              static_cast<size_t>(count))
        << "count " << count;
  }
  cxr::models::ModelConfig four = cxr::testing::tiny_config();
  four.filters = {4, 4, 4, 4};
  auto model = cxr::models::make_model(four);
  const auto chosen = OodDetector::choose_layers(*model, OodOptions{}.layers);
  EXPECT_EQ(chosen.size(), 4u);
}

}  // namespace

namespace {

TEST(OodDetector, MaxCombinationIsTheLargestLayerScoreAndRoundTrips) {
  Fitted f = fit_two_layers();
  OodOptions o;
  o.combine = "max";
  torch::Tensor y;
  auto x1 = sample(f.l1, 1000, 10, &y);
  auto x2 = sample(f.l2, 1000, 11);
  auto det = OodDetector::fit({"a", "b"}, {x1, x2}, y, o);
  auto n1 = sample(f.l1, 50, 70);
  auto n2 = sample(f.l2, 50, 71);
  // Each layer alone, as a one-layer detector with the same statistics.
  OodDetector only_a = det, only_b = det;
  only_a.layers = {det.layers[0]};
  only_b.layers = {det.layers[1]};
  const auto expect = torch::maximum(only_a.score({n1}), only_b.score({n2}));
  EXPECT_TRUE(torch::allclose(det.score({n1, n2}), expect));
  // The mean detector averages the same two scores.
  const auto mean = OodDetector::fit({"a", "b"}, {x1, x2}, y, OodOptions{});
  EXPECT_TRUE(torch::allclose(mean.score({n1, n2}),
                              (only_a.score({n1}) + only_b.score({n2})) / 2.0));
  det.threshold = 1.0;
  TempDir dir;
  det.save((dir / "ood.pt").string());
  const auto back = OodDetector::load((dir / "ood.pt").string());
  EXPECT_EQ(back.combine, "max");
  EXPECT_TRUE(torch::equal(back.score({n1, n2}), det.score({n1, n2})));
  o.combine = "median";
  EXPECT_THROW(OodDetector::fit({"a", "b"}, {x1, x2}, y, o), cxr::ConfigError);
}

}  // namespace
